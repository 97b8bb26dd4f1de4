"""``nerlab ui``: the MLflow UI over a study's (or any) store, on 127.0.0.1 unless --host says otherwise."""

from __future__ import annotations

import sys

UI_PORT = 5000  # MLflow's own default; when it is taken and no --port was given, a free one instead


def cmd_ui(args) -> int:
    """The MLflow UI over a study's (or any) store, on 127.0.0.1 unless --host says otherwise."""
    from nerlab.platform.tracking import server as mlflow_server
    from nerlab.platform.tracking.stores import client, store_uri, study_store
    from nerlab.platform.errors import redact

    if args.store:
        uri, exp_path = store_uri(args.store), ""
    else:
        uri, name, experiment, _ = study_store(args.target)
        exp_path = ""
        if uri.startswith(("http://", "https://")):
            print(f"the study {name} is on the tracking server {redact(uri)}: open it in a browser")
            return 0
        if experiment:
            exp = client(uri).get_experiment_by_name(experiment)
            exp_path = f"/#/experiments/{exp.experiment_id}" if exp is not None else ""
    if uri.startswith(("http://", "https://")):
        print(f"{redact(uri)} is already a tracking server: open it in a browser")
        return 0
    try:
        proc, url = mlflow_server.start(uri, None, host=args.host, port=args.port, prefer=UI_PORT)
    except mlflow_server.PortLost as e:
        print(f"nerlab: error: the MLflow UI did not start (port taken?): {e}", file=sys.stderr)
        return 1
    try:  # from here a Ctrl-C stops the server, even one that comes while the lines below print
        if not args.port and not url.endswith(f":{UI_PORT}"):
            print(f"port {UI_PORT} is taken: serving on {url.rsplit(':', 1)[1]} instead", flush=True)
        print(f"MLflow UI on {url}{exp_path}  (Ctrl-C to stop)", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        mlflow_server.stop(proc)
    return 0


def register(sub) -> None:
    from nerlab.platform.commands import port_number

    u = sub.add_parser("ui", help="browse a study's runs in the MLflow UI (127.0.0.1)")
    u.add_argument("target", nargs="?", default="demo", help="study name (under ./runs) or output folder")
    u.add_argument("--store", help="an MLflow store instead: a SQLite file, a folder with mlflow.db, or a URI")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=port_number,
                   help=f"this port or fail (default: {UI_PORT}, or a free port where {UI_PORT} is taken)")
    u.set_defaults(fn=cmd_ui)
