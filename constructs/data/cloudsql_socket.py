"""Where Cloud Run mounts the Cloud SQL sockets: the one definition of that path.

The Cloud Run API requires this path for a Cloud SQL volume; the backend store URI's `host=` and the
config's refusal of it as the artifact mount read it from here. stacks/config.py runs this file rather
than importing it (any `constructs.` import loads the jsii library and starts Node), so keep it free of
imports.
"""

CLOUDSQL_MOUNT = "/cloudsql"
