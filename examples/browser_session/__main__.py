from examples.browser_session.app import app
from examples.demo import run

run(app)
