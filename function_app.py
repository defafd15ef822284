"""The Functions app: registers one blueprint per trigger, nothing else."""

import logging
import os

import azure.functions as func

from functions.archive_blob_trigger import bp as archive_blob
from functions.catchup_timer import bp as catchup
from functions.compaction_timer import bp as compaction
from functions.eventhub_trigger import bp as eventhub
from functions.query_http import bp as query
from functions.retention_timer import bp as retention
from functions.search_http import bp as search
from shared.settings import read_settings

# What every path needs (storage, the hub, the archive container, the store prefix) stops the
# app at startup when bad, named in the error. A function's own bad setting (retention's, the
# catch-up's, the seal, forwarding's) stops only the functions that read it, named in the
# error of each of their runs (functions/shell.py); it is named here once as well.
for section, error in read_settings(os.environ).invalid.items():
    logging.getLogger(__name__).error("the %s settings are bad: %s", section, error)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (eventhub, archive_blob, catchup, retention, compaction, query, search):
    app.register_functions(blueprint)
