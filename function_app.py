"""The Functions app: registers one blueprint per trigger, nothing else."""

import azure.functions as func

from functions.archive_blob_trigger import bp as archive_blob
from functions.catchup_timer import bp as catchup
from functions.eventhub_trigger import bp as eventhub
from functions.query_http import bp as query
from functions.retention_timer import bp as retention

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (eventhub, archive_blob, catchup, retention, query):
    app.register_functions(blueprint)
