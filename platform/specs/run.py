"""The run spec: one training job, from YAML to validated frozen dataclasses.

Relative paths in a spec are relative to the spec file's folder. ``plm`` is a hub name, a local folder,
or ``tiny:LAYERSxHIDDEN`` (a small BERT built locally from the training data, for laptops and tests).
``data`` names files, or ``synth`` a synthetic corpus generated (once, cached) into the output folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from nerlab.losses import SETTINGS, LossConfig, LossSettings, preset
from nerlab.models import names as N
from nerlab.models.tagger import TaggerConfig
from nerlab.models.training import TrainConfig
from nerlab.models.wojood import TASKS
from nerlab.platform.errors import SpecError
from nerlab.platform.specs.loader import from_dict, load_yaml, to_dict

TINY_PLM = re.compile(r"^tiny:(\d+)x(\d+)$")
REMOTE = "s3://"  # data files and PLM folders in object storage (fetched by each node: tracking.storage.local)
KNOWN_HUB_PLMS = (  # the reference system's PLMs and common alternatives; any other hub name is allowed too
    "UBC-NLP/ARBERTv2", "CAMeL-Lab/bert-base-arabic-camelbert-mix", "qarib/bert-base-qarib",
    "aubmindlab/bert-base-arabertv2", "UBC-NLP/MARBERTv2", "CAMeL-Lab/bert-base-arabic-camelbert-msa",
)


@dataclass(frozen=True)
class SynthData:
    sentences: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sentences < 10:
            raise ValueError(f"sentences must be at least 10, not {self.sentences}")


@dataclass(frozen=True)
class DataSpec:
    train: str | None = None
    val: str | None = None
    test: str | None = None
    synth: SynthData | None = None  # instead of files: a generated corpus

    def __post_init__(self) -> None:
        if self.synth is None and not (self.train and self.val):
            raise ValueError("give data.train and data.val (and data.test), or data.synth")
        if self.synth is not None and (self.train or self.val or self.test):
            raise ValueError("give either data files or data.synth, not both")


@dataclass(frozen=True)
class LossSpec(LossSettings):
    """A preset or weights, and the losses' settings (``tversky_alpha``, ...: from the registry in losses)."""

    preset: str | None = "unified"  # ce | unified | unified-seed (with IRM) | dice | focal | tversky
    weights: dict[str, float] | None = None  # instead of a preset: {ce: 0.5, focal: 0.5}; irm: the IRMv1 penalty

    def __post_init__(self) -> None:
        try:
            self.to_loss_config()  # validates the preset, names, weights and settings
        except ValueError as e:
            key = ("preset" if self.weights is None and "preset" in str(e) else "weights"
                   if self.weights is not None and any(w in str(e) for w in ("weight", "loss name")) else None)
            raise ValueError(f"{key}: {e}" if key else str(e)) from None

    @property
    def name(self) -> str:
        if self.weights is None:
            return self.preset
        return "+".join(f"{w:g}{k}" for k, w in self.weights.items() if w)

    def to_loss_config(self) -> LossConfig:
        weights = dict(self.weights) if self.weights is not None else preset(self.preset)
        return LossConfig(weights=weights, **{k: getattr(self, k) for k in SETTINGS})


@dataclass(frozen=True)
class ModelSpec(TaggerConfig):
    """The tagger's settings (declared and checked by ``TaggerConfig``) and how to load the PLM."""

    trust_remote_code: bool = False  # never run a hub repo's code unless asked

    def tagger(self, plm: str) -> TaggerConfig:
        """The tagger's own settings, with the PLM as resolved on the worker (a folder)."""
        return TaggerConfig(**{**{f.name: getattr(self, f.name) for f in fields(TaggerConfig)}, "plm": plm})


def check_gpus_per_worker(gpus: float, workers: int, use_gpu: bool | None) -> None:
    """What Ray and NCCL accept: a fraction in (0, 1] (trials sharing a GPU) or a whole number of GPUs,
    and a fraction only for one-worker jobs: Ray packs fractional workers of one job onto the same GPU,
    and NCCL refuses two DDP ranks on one device."""
    if gpus < 0 or (gpus == 0 and use_gpu is not False):  # 0 only where no GPU is ever asked for
        raise ValueError(f"gpus_per_worker must be > 0, not {gpus:g} (use_gpu: false runs on CPUs)")
    if gpus > 1 and gpus != int(gpus):
        raise ValueError(f"gpus_per_worker must be a fraction in (0, 1] or a whole number, not {gpus:g}")
    if gpus < 1 and workers > 1 and use_gpu is not False:
        raise ValueError(f"gpus_per_worker {gpus:g} with {workers} workers: the workers of one job would share "
                         f"a GPU, which NCCL refuses; use 1 worker per job (trials may share a GPU) or whole GPUs")


@dataclass(frozen=True)
class Resources:
    workers: int = 1  # DDP workers of one job
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    max_failures: int = 3  # worker failures a job recovers from (from its last checkpoint)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, not {self.workers}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, not {self.cpus_per_worker}")
        check_gpus_per_worker(self.gpus_per_worker, self.workers, self.use_gpu)

    def need(self, gpu: bool, overhead_cpus: float = 0.0) -> dict[str, float]:
        """What one job holds at once: its workers' CPUs (plus ``overhead_cpus``), and their GPUs when ``gpu``."""
        return {"CPU": overhead_cpus + self.workers * self.cpus_per_worker,
                **({"GPU": self.workers * self.gpus_per_worker} if gpu else {})}


TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks")


@dataclass(frozen=True)
class Tracking:
    experiment: str | None = None  # default: the run or study name
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else SQLite under the output folder
    system_metrics_s: float = 2.0  # CPU, memory, GPU of rank 0's machine every N seconds (short trials); 0: off

    def __post_init__(self) -> None:
        if self.system_metrics_s < 0:
            raise ValueError(f"system_metrics_s must be >= 0 (0 turns them off), not {self.system_metrics_s}")
        uri = self.tracking_uri
        if uri is None or "://" not in uri:  # unset, or a bare path: a SQLite file there
            return
        scheme = uri.split("://", 1)[0].split("+", 1)[0].lower()
        if scheme == "file":
            raise ValueError("tracking_uri: MLflow 3's file store is refused: give sqlite:///ABSOLUTE/PATH.db "
                             "or a tracking server URL")
        if scheme not in TRACKING_SCHEMES:
            raise ValueError(f"tracking_uri: unknown scheme {scheme + '://'!r} (allowed: "
                             f"{', '.join(TRACKING_SCHEMES)})")


@dataclass(frozen=True)
class SharedSpec:
    """The fields a run spec and a study spec share, and their rules."""

    name: str
    task: str = "nested"
    data: DataSpec = field(default_factory=lambda: DataSpec(synth=SynthData()))
    model: ModelSpec = field(default_factory=ModelSpec)  # a study's plm comes from its search
    train: TrainConfig = field(default_factory=TrainConfig)  # a study's lr, seed, penalty may come from its search
    tracking: Tracking = field(default_factory=Tracking)
    precision: str = "auto"  # auto (bf16 autocast on a GPU or CPU that has it, else fp32) | fp32 | bf16 | fp16
    output: str | None = None  # default: runs/<name> under the current folder
    ray_address: str | None = None  # default: RAY_ADDRESS, else a local Ray

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"name {self.name!r} must be letters, digits, '.', '_' or '-'")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {self.precision!r}")
        if self.model.reference and self.train.batch_order != "random":
            raise ValueError(f"train.batch_order: the reference normalisation needs random-order batches (its share "
                             f"of padding positions in the loss depends on them), not {self.train.batch_order!r}")

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass(frozen=True)
class RunSpec(SharedSpec):
    loss: LossSpec = field(default_factory=LossSpec)
    resources: Resources = field(default_factory=Resources)


def check_plm(plm: str, source: str, key: str = "model.plm") -> None:
    """A PLM must be a tiny spec, a model folder with safetensors weights, or a hub-style name (``org/name``).

    Weights load only from safetensors: a folder holding only pickled weights (``pytorch_model.bin``)
    is refused here, before anything starts, rather than unpickled later.
    """
    if TINY_PLM.match(plm) or plm.startswith(REMOTE):  # a folder in object storage: checked once fetched
        return
    path = Path(plm).expanduser()
    if path.exists() or plm.startswith((".", "/", "~")):
        if not path.exists():
            raise SpecError(f"{source}: {key}: {plm}: no such model folder")
        if not (path / "config.json").is_file():
            raise SpecError(f"{source}: {key}: {plm}: not a model folder (no config.json)")
        if not any(path.glob("*.safetensors")):
            pickled = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
            found = f" (found {', '.join(pickled)})" if pickled else ""
            raise SpecError(f"{source}: {key}: {plm}: no safetensors weights{found}; nerlab never loads "
                            f"pickled weights: convert the checkpoint to model.safetensors")
        check_model_files(path, f"{source}: {key}")
        return
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", plm):
        raise SpecError(f"{source}: {key}: unknown PLM {plm!r}: give a model folder, a hub name such as "
                        f"{KNOWN_HUB_PLMS[0]}, or tiny:LAYERSxHIDDEN")


def check_model_files(folder: Path, where: str) -> None:
    """Every file a job loads from a model folder can be read: config.json parses, and each safetensors
    file's header is whole and covers the file (a corrupt or truncated download fails here, before Ray
    starts, instead of in every worker and every retry)."""
    import json

    from safetensors import SafetensorError, safe_open

    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise SpecError(f"{where}: {folder / 'config.json'}: not valid JSON ({e})") from None
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt") as f:
                f.keys()
        except (SafetensorError, OSError) as e:
            raise SpecError(f"{where}: {weights}: unreadable safetensors weights ({e}): the file is corrupt "
                            f"or truncated") from None


def missing_file(path: Path) -> str:
    """Why ``path`` cannot be read; for the WojoodNER corpus (in a folder named ``wojood``, as the specs in
    ``experiments/`` expect it in the repository's git-ignored ``data/wojood/``), where it goes and whence."""
    why = f"{path}: no such file"
    if "wojood" in (p.lower() for p in path.parent.parts):
        why += (f"; the WojoodNER 2023 corpus is not distributed with nerlab: obtain it from its authors and put "
                f"its train.txt, val.txt and test.txt in {path.parent}/")
    return why


def resolve_paths(spec: RunSpec, base: Path, source: str) -> RunSpec:
    """Make data, PLM and output paths absolute (Ray moves each worker's working directory)."""
    def absolute(p: str | None, key: str, must_exist: bool = True) -> str | None:
        if p is None or p.startswith(REMOTE):  # read on each node (storage.local), checked by the driver
            return p
        if "://" in p:
            raise SpecError(f"{source}: {key}: {p}: only s3:// URIs or paths are supported")
        q = (base / p).expanduser().resolve()
        if must_exist and not q.exists():
            raise SpecError(f"{source}: {key}: {missing_file(q)}")
        return str(q)

    data = spec.data
    if data.synth is None:
        data = replace(data, train=absolute(data.train, "data.train"), val=absolute(data.val, "data.val"),
                       test=absolute(data.test, "data.test"))
    plm = spec.model.plm
    if not TINY_PLM.match(plm) and (plm.startswith((".", "/", "~")) or (base / plm).exists()):
        plm = absolute(plm, "model.plm", must_exist=False)  # check_plm says what is wrong with the folder
    check_plm(plm, source)
    output = str(Path(spec.output or Path(N.RUNS_DIR) / spec.name).expanduser().resolve())
    return replace(spec, data=data, model=replace(spec.model, plm=plm), output=output)


# Smoke mode (``--smoke``): any run or study shrunk to seconds, to check that its spec runs.
SMOKE_PLM = "tiny:2x32"  # instead of a hub PLM
SMOKE_DATA = DataSpec(synth=SynthData(sentences=200, seed=0))  # instead of data files (at most this many)


def smoke_plm(plm: str) -> str:
    return plm if plm.startswith("tiny:") else SMOKE_PLM


def smoke_model_train(model: ModelSpec, train: TrainConfig) -> tuple[ModelSpec, TrainConfig]:
    """Short windows, one epoch, small batches and a learning rate at which a tiny encoder learns."""
    return (replace(model, max_length=min(model.max_length, 64)),
            replace(train, epochs=1, batch_size=min(train.batch_size, 16), lr=max(train.lr, 1e-3)))


def smoke_run(spec: RunSpec) -> RunSpec:
    """A seconds-long version of any run: synthetic data, one epoch, a tiny PLM for hub names, 1 worker."""
    model, train = smoke_model_train(replace(spec.model, plm=smoke_plm(spec.model.plm)), spec.train)
    return replace(spec, name=f"{spec.name}-smoke", data=SMOKE_DATA, model=model, train=train,
                   resources=replace(spec.resources, workers=1, use_gpu=False,
                                     cpus_per_worker=min(spec.resources.cpus_per_worker, 1.0)))


def load_run_spec(path: str | Path, overrides: dict | None = None, smoke: bool = False) -> RunSpec:
    """Read, validate and resolve a run spec; every problem is a SpecError naming the file and key."""
    path = Path(path)
    data = load_yaml(path)
    for key, value in (overrides or {}).items():  # dotted keys from the command line, e.g. resources.workers
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    spec = from_dict(RunSpec, data, str(path))
    if smoke:
        spec = smoke_run(spec)
    return resolve_paths(spec, path.parent, str(path))
