from examples.async_registration.app import app
from examples.demo import run

run(app)
