"""The Functions app: registers one blueprint per trigger, nothing else."""

import os

import azure.functions as func

from functions.archive_blob_trigger import bp as archive_blob
from functions.catchup_timer import bp as catchup
from functions.eventhub_trigger import bp as eventhub
from functions.query_http import bp as query
from functions.retention_timer import bp as retention
from shared.settings import load_settings

# A bad app setting stops the app at startup, named in the error, before any function runs
# (a wrong retention must never get as far as the timer).
load_settings(os.environ)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (eventhub, archive_blob, catchup, retention, query):
    app.register_functions(blueprint)
