"""Safe defaults: loopback servers, no pickles, no remote code, no credentials in tracking, safe YAML.

The loopback checks start one real ``mlflow server`` (and use the suite's local Ray) and read the addresses
they listen on from the kernel; the other checks start no server and no Ray. The source-tree checks read the
product code (models, losses, platform, dashboards) with ``ast``, so a comment or a string that merely
mentions ``torch.load`` does not count, and a new call that forgets the safe form fails here.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from contextlib import suppress
from pathlib import Path

import mlflow
import psutil
import pytest
import ray
import torch
import yaml
from mlflow.tracking import MlflowClient
from transformers import BertConfig, BertModel

from nerlab.models import tagger as tagger_mod
from nerlab.models.schema import LabelSchema
from nerlab.models.tagger import META_FILE, MultiTaskTagger, TaggerConfig, load_tokenizer
from nerlab.platform.tracking import server as mlflow_server
from nerlab.platform.cli import main as cli_main
from nerlab.platform.specs.run import ModelSpec, RunSpec, Tracking, check_plm, load_run_spec
from nerlab.platform.specs.study import StudySpec
from nerlab.platform.errors import SpecError, redact
from nerlab.platform.specs.loader import load_yaml

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("models", "losses", "platform", "dashboards")
SECRETS = ("s3cret", "hunter2", "tok123")
CRED_URI = "https://alice:s3cret@mlflow.example.com:5000/?token=tok123"
CRED_RAY = "ray://bob:hunter2@head.example.com:10001"


def product_sources() -> list[tuple[Path, ast.Module]]:
    files = sorted(p for d in PRODUCT for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 20, "the product tree was not found"
    return [(p, ast.parse(p.read_text(encoding="utf-8"), str(p))) for p in files]


def calls(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(node) -> str:
    """``torch.load`` for the func of ``torch.load(...)``; '' for anything not a plain name chain."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def keyword(call: ast.Call, name: str):
    """The literal value of keyword ``name`` (``MISSING`` if absent, ``DYNAMIC`` if not a constant)."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "DYNAMIC"
    return "MISSING"


def where(path: Path, node) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


def tiny_bert_config() -> BertConfig:
    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)


# ---- servers bind to 127.0.0.1 ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_up(tmp_path_factory):
    """One real ``mlflow server`` as nerlab starts it, for the module: (its process, its URL, the port that was
    taken before it bound one).

    The port first picked for it is bound by someone else before the server binds it (a Ray worker starting,
    as seen in CI): /health there answers with bytes that are not HTTP, the server exits, and ``start``
    starts it again on a fresh port."""
    import socket
    import threading

    folder = tmp_path_factory.mktemp("loopback-server")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]

    def answer_garbage():
        while True:
            try:
                conn, _ = squatter.accept()
            except OSError:
                return
            conn.sendall(b"\x00\x00\x18\x04\x00\x00\x00\x00\x00")  # an HTTP/2 settings frame, as gRPC sends
            conn.close()

    threading.Thread(target=answer_garbage, daemon=True).start()
    ports = iter([taken])
    real = mlflow_server.free_port
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mlflow_server, "free_port", lambda host="127.0.0.1": next(ports, None) or real(host))
        try:
            proc, url = mlflow_server.start(f"sqlite:///{folder / 'mlflow.db'}", None, log_file=folder / "server.log")
        finally:
            squatter.close()
    try:
        yield proc, url, taken
    finally:
        mlflow_server.stop(proc)


def test_the_shared_server_came_up_on_a_port_other_than_the_taken_one(mlflow_up) -> None:
    import urllib.request

    _, url, taken = mlflow_up
    assert not url.endswith(f":{taken}")
    with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
        assert r.status == 200


def test_mlflow_server_listens_on_loopback_only(mlflow_up, listening) -> None:
    """Every socket the server's processes (supervisor, mlflow, uvicorn) listen on is on 127.0.0.1, its URL's
    port among them: read from the kernel's socket table, not from a command line."""
    import psutil

    proc, url, _ = mlflow_up
    supervisor = psutil.Process(proc.pid)
    sockets = listening([supervisor, *supervisor.children(recursive=True)])
    assert url == f"http://127.0.0.1:{url.rsplit(':', 1)[1]}"
    assert ("127.0.0.1", int(url.rsplit(":", 1)[1])) in sockets
    assert {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets


def test_mlflow_server_refuses_other_interfaces(mlflow_up, outside_address) -> None:
    import socket

    _, url, _ = mlflow_up
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((outside_address, int(url.rsplit(":", 1)[1])), timeout=10).close()


def test_nerlab_ui_serves_on_loopback_unless_asked() -> None:
    """``nerlab ui``'s host (the real UI over a study is checked on its sockets in tests/dashboards)."""
    from nerlab.platform.cli import build_parser

    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    assert build_parser().parse_args(["ui", "--host", "10.1.2.3"]).host == "10.1.2.3"


@pytest.mark.slow
def test_local_ray_dashboard_listens_on_loopback_only(local_ray, listening, outside_address) -> None:
    """The dashboard of a local Ray that nerlab starts (its state API, RAY_API_SERVER_ADDRESS) listens on
    127.0.0.1 only and refuses the machine's other address; Ray's tasks get MLflow's telemetry off.

    Ray's own gRPC services (GCS, raylet, workers) listen on every interface whatever ``ray.init`` is told
    (Ray 2.60); its token authentication, on by default, is what guards them."""
    import os
    import socket

    import psutil

    with local_ray(num_cpus=2):  # shut down after the test: a later one needs no Ray running
        api = os.environ["RAY_API_SERVER_ADDRESS"]
        port = int(api.rsplit(":", 1)[1])
        assert api == f"http://127.0.0.1:{port}"
        sockets = listening(psutil.Process().children(recursive=True))  # the Ray processes this driver started
        assert {ip for ip, p in sockets if p == port} == {"127.0.0.1"}, sockets
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outside_address, port), timeout=10).close()

        @ray.remote(num_cpus=0)
        def telemetry() -> str | None:
            return os.environ.get("MLFLOW_DISABLE_TELEMETRY")

        assert ray.get(telemetry.remote()) == os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true")


def test_no_wildcard_bind_address_in_the_product() -> None:
    for path, tree in product_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in ("0.0.0.0", "::"), f"{where(path, node)}: binds every interface"
        for call in calls(tree):
            if keyword(call, "host") == "0.0.0.0" or keyword(call, "dashboard_host") == "0.0.0.0":
                raise AssertionError(f"{where(path, call)}: binds every interface")


# ---- weights only from safetensors, never a pickle ---------------------------------------------------------------
class Tripwire:
    """Unpickling this creates ``marker``: proof that someone opened the pickle."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def no_unpickling(monkeypatch):
    """Record every ``torch.load`` and ``pickle`` load while a test runs."""
    seen = []

    def spy(name, real):
        def wrapper(*args, **kwargs):
            seen.append(name)
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(torch, "load", spy("torch.load", torch.load))
    monkeypatch.setattr(pickle, "load", spy("pickle.load", pickle.load))
    monkeypatch.setattr(pickle, "loads", spy("pickle.loads", pickle.loads))
    return seen


def pickled_plm(folder: Path, marker: Path) -> Path:
    """A Hugging Face folder whose only weights are a pickle that would touch ``marker`` when loaded."""
    folder.mkdir(parents=True)
    tiny_bert_config().save_pretrained(folder)
    torch.save({"embeddings.word_embeddings.weight": Tripwire(marker)}, folder / "pytorch_model.bin")
    return folder


def test_plm_folder_with_only_a_pickle_is_refused_and_never_opened(tmp_path, no_unpickling) -> None:
    marker = tmp_path / "unpickled"
    folder = pickled_plm(tmp_path / "plm", marker)

    with pytest.raises(SpecError, match=r"spec.yaml: model.plm: .*no safetensors weights \(found pytorch_model.bin\)"):
        check_plm(str(folder), "spec.yaml")
    with pytest.raises(OSError, match="no safetensors weights.*never loads pickled weights"):
        MultiTaskTagger.from_plm(str(folder), LabelSchema.wojood("nested"), TaggerConfig(plm=str(folder)))

    assert no_unpickling == [] and not marker.exists()


def test_saved_model_loads_only_from_safetensors(tmp_path, no_unpickling) -> None:
    """A nerlab model folder whose weights are a pickle (no model.safetensors) is refused unopened."""
    marker = tmp_path / "unpickled"
    folder = tmp_path / "model"
    (folder / "encoder").mkdir(parents=True)
    tiny_bert_config().save_pretrained(folder / "encoder")
    meta = {"format": 1, "tagger": {"plm": "x"}, "schema": LabelSchema.wojood("nested").to_dict()}
    (folder / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    torch.save({"heads.weight": Tripwire(marker)}, folder / "pytorch_model.bin")

    with pytest.raises(FileNotFoundError, match=rf"^{folder}: no model\.safetensors; nerlab never loads pickled"):
        MultiTaskTagger.load(folder)
    assert no_unpickling == [] and not marker.exists()


def test_encoder_from_a_safetensors_folder_loads(tmp_path, no_unpickling) -> None:
    """The refusal is about pickles only: a folder saved as safetensors loads, without torch.load."""
    folder = tmp_path / "plm"
    BertModel(tiny_bert_config()).save_pretrained(folder)
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    check_plm(str(folder), "spec.yaml")
    model = MultiTaskTagger.from_plm(str(folder), LabelSchema.wojood("nested"), TaggerConfig(plm=str(folder)))
    assert model.encoder.config.hidden_size == 16
    assert no_unpickling == []


def test_every_torch_load_in_the_product_is_weights_only() -> None:
    found = []
    for path, tree in product_sources():
        for call in calls(tree):
            name = dotted(call.func)
            if name == "torch.load" or name.endswith(".torch.load"):
                found.append(where(path, call))
                assert keyword(call, "weights_only") is True, f"{where(path, call)}: torch.load without weights_only=True"
            if name.startswith(("pickle.", "cloudpickle.", "dill.", "joblib.")) and name.endswith((".load", ".loads")):
                raise AssertionError(f"{where(path, call)}: unpickles")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                assert keyword(call, "allow_pickle") in ("MISSING", False), f"{where(path, call)}: allow_pickle"
    assert found, "expected the checkpoint loader's torch.load (optimizer state) to be checked"


def test_every_model_from_pretrained_in_the_product_is_safetensors_only() -> None:
    """Weight-loading ``from_pretrained`` calls (``*Model*``) pass ``use_safetensors=True``."""
    checked = []
    for path, tree in product_sources():
        for call in calls(tree):
            name = dotted(call.func)
            if name.endswith(".from_pretrained") and "Model" in name.split(".")[-2]:
                checked.append(where(path, call))
                assert keyword(call, "use_safetensors") is True, f"{where(path, call)}: may load a pickle"
    assert checked, "expected the tagger's AutoModel.from_pretrained"


# ---- trust_remote_code is off unless the spec turns it on --------------------------------------------------------
def test_trust_remote_code_defaults_off_in_every_spec(tmp_path) -> None:
    assert ModelSpec().trust_remote_code is False
    assert RunSpec(name="r").model.trust_remote_code is False
    assert StudySpec(name="s").model.trust_remote_code is False
    assert StudySpec(name="s").base_run().model.trust_remote_code is False

    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump({"name": "r", "data": {"synth": {"sentences": 20}}}))
    assert load_run_spec(spec).model.trust_remote_code is False
    spec.write_text(yaml.safe_dump({"name": "r", "model": {"trust_remote_code": True}}))
    assert load_run_spec(spec).model.trust_remote_code is True
    spec.write_text(yaml.safe_dump({"name": "r", "model": {"trust_remote_code": "yes"}}))
    with pytest.raises(SpecError, match="model.trust_remote_code: expected bool"):
        load_run_spec(spec)


def test_trust_remote_code_reaches_from_pretrained(monkeypatch) -> None:
    seen = []

    def fake_model(plm, **kwargs):
        seen.append(("model", plm, kwargs))
        return BertModel(tiny_bert_config(), add_pooling_layer=False)

    def fake_tokenizer(plm, **kwargs):
        seen.append(("tokenizer", plm, kwargs))
        return object()

    monkeypatch.setattr(tagger_mod.AutoModel, "from_pretrained", fake_model)
    monkeypatch.setattr(tagger_mod.AutoTokenizer, "from_pretrained", fake_tokenizer)
    schema = LabelSchema.wojood("nested")
    MultiTaskTagger.from_plm("org/plm", schema)
    MultiTaskTagger.from_plm("org/plm", schema, trust_remote_code=True)
    load_tokenizer("org/plm")
    load_tokenizer("org/plm", trust_remote_code=True)
    flags = [(kind, kw["trust_remote_code"]) for kind, _, kw in seen]
    assert flags == [("model", False), ("model", True), ("tokenizer", False), ("tokenizer", True)]
    assert all(kw["use_safetensors"] is True for kind, _, kw in seen if kind == "model")


def test_no_hard_coded_trust_remote_code_in_the_product() -> None:
    for path, tree in product_sources():
        for call in calls(tree):
            assert keyword(call, "trust_remote_code") is not True, f"{where(path, call)}: trust_remote_code=True"


def _train_loop_calls() -> list[ast.Call]:
    tree = ast.parse((ROOT / "platform" / "training" / "worker.py").read_text(encoding="utf-8"))
    return list(calls(tree))


def test_train_loop_passes_the_specs_trust_remote_code_to_the_model() -> None:
    froms = [c for c in _train_loop_calls() if dotted(c.func).endswith("from_plm")]
    assert froms, "the train loop builds its tagger with MultiTaskTagger.from_plm"
    for c in froms:
        args = [ast.unparse(a) for a in c.args] + [ast.unparse(k.value) for k in c.keywords]
        assert any(a.endswith("model.trust_remote_code") for a in args), ast.unparse(c)


def test_train_loop_passes_the_specs_trust_remote_code_to_the_tokenizer() -> None:
    loads = [c for c in _train_loop_calls()
             if dotted(c.func) in ("AutoTokenizer.from_pretrained", "load_tokenizer")]
    assert loads
    for c in loads:
        args = [ast.unparse(a) for a in c.args] + [ast.unparse(k.value) for k in c.keywords]
        assert any(a.endswith("trust_remote_code") for a in args), ast.unparse(c)


# ---- credentials in tracking URIs never reach params, tags or output ---------------------------------------------
def test_redact_masks_credentials() -> None:
    assert redact(CRED_URI) == "https://***@mlflow.example.com:5000/?token=***"
    assert redact(CRED_RAY) == "ray://***@head.example.com:10001"
    assert redact("sqlite:////tmp/x/mlflow.db") == "sqlite:////tmp/x/mlflow.db"
    assert redact("http://h/?apikey=abc&x=1") == "http://h/?apikey=***&x=1"
    assert redact(f"got ['{CRED_URI}'] and {CRED_RAY}") == \
        "got ['https://***@mlflow.example.com:5000/?token=***'] and ray://***@head.example.com:10001"


def _all_logged(client: MlflowClient, run_id: str) -> str:
    data = client.get_run(run_id).data
    return json.dumps({"params": data.params, "tags": data.tags}, ensure_ascii=False)


def test_job_run_params_and_tags_hold_no_credentials(tmp_path, capsys, caplog) -> None:
    """The real helpers (jobs.open_run, tracking.spec_params/log_params) against a SQLite store."""
    from nerlab.platform.training.job import open_run
    from nerlab.platform.training.inputs import Inputs

    caplog.set_level("DEBUG")
    spec = RunSpec(name="creds", tracking=Tracking(experiment="creds", tracking_uri=CRED_URI), ray_address=CRED_RAY,
                   output=str(tmp_path / "out"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    inputs = Inputs(train="/d/train.txt", val="/d/val.txt", test=None, plm="/p/plm")

    client, run = open_run(spec, inputs, "creds@test", store, None, "creds")
    try:
        logged = _all_logged(client, run.info.run_id)
        assert "***@mlflow.example.com:5000" in logged and "***@head.example.com:10001" in logged
        leaked = [s for s in (*SECRETS, "alice:", "bob:") if s in logged]
        assert not leaked, f"{leaked} in {logged}"
    finally:
        client.set_terminated(run.info.run_id, status="KILLED")
    out = capsys.readouterr()
    for text in (out.out, out.err, caplog.text):
        assert not [s for s in SECRETS if s in text]


def test_study_run_params_hold_no_credentials(tmp_path) -> None:
    """The study's parent run logs ``spec_params(spec)``: check that with the real logging helper."""
    from nerlab.platform.tracking import runs as T

    spec = StudySpec(name="creds-study", tracking=Tracking(tracking_uri=CRED_URI), ray_address=CRED_RAY)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = T.ensure_experiment(client, "creds-study", None)
    run, _ = T.find_or_create_run(client, exp, "nerlab.study_run", "creds-study", run_name="creds-study",
                                  tags={"nerlab.kind": "study"})
    try:
        T.log_params(client, run.info.run_id, T.spec_params(spec), {})
        T.set_tags(client, run.info.run_id, {"tracking": T.redact(CRED_URI)})
        logged = _all_logged(client, run.info.run_id)
        assert "tracking.tracking_uri" in logged and "ray_address" in logged
        assert not [s for s in (*SECRETS, "alice:", "bob:") if s in logged], logged
    finally:
        client.set_terminated(run.info.run_id, status="KILLED")


def test_error_lines_hold_no_credentials(tmp_path, capsys, monkeypatch) -> None:
    """A bad spec whose tracking section carries credentials: the one error line masks them."""
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not start"))
    spec = tmp_path / "run.yaml"
    for bad in ({"tracking_uri": CRED_URI, "bogus": 1}, {"tracking_uri": {"url": CRED_URI}},
                {"tracking_uri": [CRED_URI]}):
        spec.write_text(yaml.safe_dump({"name": "r", "ray_address": CRED_RAY, "tracking": bad}))
        assert cli_main(["train", str(spec)]) == 2
        out = capsys.readouterr()
        assert len(out.err.splitlines()) == 1 and "tracking" in out.err, out.err
        assert not [s for s in (*SECRETS, "alice:", "bob:") if s in out.out + out.err], out.err


# ---- YAML only through a safe loader ------------------------------------------------------------------------------
UNSAFE_YAML = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all"}
UNSAFE_LOADERS = {"Loader", "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader", "CUnsafeLoader"}


def test_every_yaml_load_in_the_product_is_safe() -> None:
    safe = []
    for path, tree in product_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and dotted(node.value) == "yaml":
                assert node.attr not in UNSAFE_YAML | UNSAFE_LOADERS, f"{where(path, node)}: yaml.{node.attr}"
                if node.attr in ("safe_load", "safe_load_all"):
                    safe.append(where(path, node))
            if isinstance(node, ast.ImportFrom) and node.module == "yaml":
                names = {a.name for a in node.names}
                assert not names & (UNSAFE_YAML | UNSAFE_LOADERS), f"{where(path, node)}: from yaml import {names}"
    assert safe, "specs are read with yaml.safe_load"


def test_yaml_python_tags_are_refused_unexecuted(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "evil.yaml"
    spec.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError, match=r"evil.yaml:1: not valid YAML .*constructor"):
        load_yaml(spec)
    assert not (tmp_path / "pwned").exists()


def squat(answer: bytes) -> socket.socket:
    """A port held by another program, which answers every request with ``answer``; close it to end it."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()

    def serve():
        while True:
            try:
                conn, _ = squatter.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return squatter


def hand_out_first(monkeypatch, port: int) -> None:
    """``free_port`` returns ``port`` once (as if it were free when picked), then free ports as before."""
    ports = iter([port])
    real = mlflow_server.free_port
    monkeypatch.setattr(mlflow_server, "free_port", lambda host="127.0.0.1": next(ports, None) or real(host))


HTTP2_SETTINGS = b"\x00\x00\x18\x04\x00\x00\x00\x00\x00"  # not HTTP/1: what a gRPC server sends
HTTP_200 = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK"  # another web server: 200 on any path


@pytest.mark.parametrize("answer", [HTTP2_SETTINGS, HTTP_200], ids=["grpc", "http-200"])
def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(monkeypatch, tmp_path, answer) -> None:
    """The port picked for the MLflow server is bound by someone else before the server binds it (a Ray worker
    starting, as seen in CI): the server exits, and ``serving`` starts it again on a fresh port. What answers
    on the taken port, even 200 on /health, is never taken for the server."""
    squatter = squat(answer)
    taken = squatter.getsockname()[1]
    hand_out_first(monkeypatch, taken)
    try:
        with mlflow_server.serving(f"sqlite:///{tmp_path / 'mlflow.db'}", None, tmp_path / "server.log") as url:
            assert not url.endswith(f":{taken}")
            with urllib.request.urlopen(f"{url}/version", timeout=10) as r:  # MLflow's own endpoint
                assert r.status == 200 and r.read().decode() == mlflow.__version__
    finally:
        squatter.close()


@pytest.mark.timeout(180)
def test_nerlab_ui_takes_a_free_port_when_5000_is_taken(tmp_path) -> None:
    """Without --port, ``nerlab ui`` serves on 5000, or on a free port where 5000 is taken, and says which."""
    from nerlab.platform.commands.ui import UI_PORT

    squatter = None
    with suppress(OSError):  # else someone else holds it: taken all the same
        squatter = socket.create_server(("127.0.0.1", UI_PORT))
    (tmp_path / "mlflow.db").write_bytes(b"")
    ui = subprocess.Popen([sys.executable, "-m", "nerlab.platform.cli", "ui", "--store", str(tmp_path / "mlflow.db")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = [ui.stdout.readline(), ui.stdout.readline()]
        assert out[0].startswith(f"port {UI_PORT} is taken: serving on "), out
        port = int(out[0].split("taken: serving on ")[1].split()[0])
        assert out[1].startswith(f"MLflow UI on http://127.0.0.1:{port}"), out
        assert port != UI_PORT and mlflow_server.listens(ui.pid, port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=10) as r:
            assert r.read().decode() == mlflow.__version__
    finally:
        ui.send_signal(signal.SIGINT)
        try:
            ui.wait(timeout=60)
        except subprocess.TimeoutExpired:  # say what it was doing, then end it and its server
            left = [" ".join(p.cmdline()[:6]) for p in psutil.Process(ui.pid).children(recursive=True)]
            ui.kill()
            pytest.fail(f"nerlab ui still running 60 s after Ctrl-C (children: {left}); it printed:\n"
                        f"{ui.stdout.read()[-3000:]}")
        if squatter:
            squatter.close()


def _alive(p) -> bool:
    """Not ended: a process killed a moment ago stays in the table (a zombie) until its parent reaps it."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_local_ray_takes_another_dashboard_port_when_its_own_was_taken(monkeypatch) -> None:
    """The dashboard port picked for a local Ray is taken before Ray binds it: ``connect_ray`` tries another
    port (one rule with the MLflow server's), and the failed try leaves no Ray process behind."""
    from nerlab.platform.training import job as jobs

    assert not ray.is_initialized()
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_TRAIN_V2_ENABLED", "MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.delenv(var, raising=False)  # restored after the test, whatever connect_ray sets
    squatter = squat(HTTP_200)
    taken = squatter.getsockname()[1]
    hand_out_first(monkeypatch, taken)
    try:
        jobs.connect_ray(None, num_cpus=1)
        port = int(os.environ["RAY_API_SERVER_ADDRESS"].rsplit(":", 1)[1])
        assert port != taken and mlflow_server.listens(os.getpid(), port)
        gcs = [p for p in psutil.Process().children(recursive=True) if _alive(p) and p.name() == "gcs_server"]
        assert len(gcs) == 1, gcs  # the failed try's GCS is gone
    finally:
        ray.shutdown()
        squatter.close()
