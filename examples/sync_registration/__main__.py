from examples.demo import run
from examples.sync_registration.app import app

run(app)
