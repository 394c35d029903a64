"""What each command is run with, as typed dataclasses: every command's flags, and the keys of its --config file, are
these fields (their type hints, and the help and rules in their metadata; jsonargparse makes the parser of them, see
study._command), and each settings object checks itself when it is made, from flags, a file or neither.

Fields come in groups that several commands share (:class:`Sources`, :class:`Budget`, :class:`Storage`, ...); a
command's settings class combines the groups it takes and adds its own fields. Light: importing it loads no ML library,
so that ``--help`` answers at once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from emotion_core import variants
from emotion_core.precision import PRECISIONS
from emotion_core.sources import local_path, looks_like_path
from emotion_core.training.config import TrainConfig
from study._errors import UsageError
from study._trials.space import OPTIMIZER, SearchSpace
from study._urls import is_sqlite, safe_name, storage_key

# What a trial's value is: validation accuracy alone, or (accuracy, peak memory) for a Pareto front.
OBJECTIVES = {"accuracy": ("maximize",), "accuracy,memory": ("maximize", "minimize")}
METRIC_NAMES = {"accuracy": ("val_accuracy",), "accuracy,memory": ("val_accuracy", "peak_memory_mib")}  # shown by the dashboard
PRUNERS = ("median", "halving", "hyperband", "none")
SAMPLERS = ("tpe", "random")
EVALUATIONS = ("subset", "full")
REPORTERS = ("none", "tensorboard", "mlflow")
# The pruner's evaluations use a third of the validation split, and never fewer than this many sentences.
PRUNING_EVAL_MIN = 200


def option(default: Any = None, help: str = "", **rules: Any) -> Any:
    """A settings field: its default, its ``--help`` text and its rules (``positive``, ``choices``, ``metavar``,
    ``nargs``, ``positional``, ``parse``: a function from the flag's text, or a config file's value, to the value)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **rules})
    return field(default=default, metadata={"help": help, **rules})


def like(group: type, name: str, default: Any) -> Any:
    """Field ``name`` of ``group`` with another default (the bench's budget is smaller than a study's)."""
    return field(default=default, metadata=group.__dataclass_fields__[name].metadata)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def model_label(model: str) -> str:
    """A model's short name: the last part of its folder or hub id (``/models/gpt2`` and ``gpt2`` are ``gpt2``)."""
    return Path(model.rstrip("/")).name or model


def word_or_count(word: str, meaning: Any, what: str) -> Callable[[Any], Any]:
    """A flag's parse: ``word`` (which stands for ``meaning``) or a number of ``what``; from a config file, null (the
    default) or a number too."""

    def parse(value: str | int | None) -> Any:
        if value is None or value == word:
            return meaning if value is not None else None
        if isinstance(value, bool) or not str(value).isdigit():
            raise ValueError(f"not {word} or a number of {what}: {value!r}")
        return int(value)

    return parse


# --max-length: auto (None) or a number of tokens; a final's --max-train-samples: all or a number of sentences.
parse_max_length = word_or_count("auto", None, "tokens")
parse_train_samples = word_or_count("all", "all", "sentences")


def check_train_samples(name: str, value: int | str | None) -> None:
    if isinstance(value, int) and value <= 0:
        raise UsageError(f"{flag(name)} must be positive or all, got {value}")


def parse_labels(value: str | list[str] | None) -> list[str] | None:
    """--labels A,B,C; from a config file, a list too."""
    if value is None:
        return None
    return [str(name).strip() for name in (value if isinstance(value, list) else str(value).split(","))]


@dataclass(kw_only=True)
class Settings:
    """The base of every command's settings: a field's rules are checked when the object is made, then :meth:`check`."""

    # The fields that the command line (or a study file) gave, as the command parsed them; None for settings built in
    # code. A run of a stored study takes what was not given from the stored definition.
    given: ClassVar[frozenset[str] | None] = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.metadata.get("positive") and value <= 0:
                raise UsageError(f"{flag(f.name)} must be positive, got {value}")
            choices = f.metadata.get("choices")
            values = value if isinstance(value, list) else [value]
            if choices and any(v not in choices for v in values):
                raise UsageError(f"{flag(f.name)} {value!r}: choose from {', '.join(map(str, choices))}")
        self.check()

    def check(self) -> None:
        """Rules between fields; a subclass adds its own."""


@dataclass(kw_only=True)
class Sources(Settings):
    """model and data"""

    model: str = option("gpt2", "hub id or local folder of the base model (AutoModelForSequenceClassification)")
    tokenizer: str | None = option(None, "hub id or local folder of the tokenizer (default: the model's)")
    data: str = option("dair-ai/emotion", "hub id, or a local folder with train/validation/test .txt/.csv/.jsonl/.parquet")

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer or self.model


@dataclass(kw_only=True)
class LocalSources(Settings):
    """where this machine keeps the study's model and data"""

    model: str | None = option(None, "the study's model on this machine, if not where the study was run (compared by content)")
    tokenizer: str | None = option(None, "the study's tokenizer on this machine, if not where the study was run")
    data: str | None = option(None, "the study's data on this machine, if not where the study was run (compared by content)")


@dataclass(kw_only=True)
class Budget(Settings):
    """training budget"""

    epochs: float = option(3.0, "training epochs per trial", positive=True)
    batch_size: int = option(32, "training batch size", positive=True)
    max_train_samples: int | None = option(None, "train on a seeded subset of this many sentences (budget runs)", positive=True)
    max_eval_samples: int | None = option(None, "validate on a seeded subset of this many sentences (budget runs)", positive=True)
    max_length: int | None = option(None, "tokens a text keeps: auto (the default), the fewest that keep 99% of the training "
                                    "texts whole (at most the model's maximum), or a number", metavar="auto|N", parse=parse_max_length,
                                    positive=True)
    labels: list[str] | None = option(None, "the label names, in id order; a label outside them is an error (default: the data's)",
                                      parse=parse_labels, metavar="A,B,...")
    evaluation: str = option("subset", "subset: the pruner's evaluations on a seeded third of the validation split (at least "
                             f"{PRUNING_EVAL_MIN} sentences), a run's value from one evaluation on the whole split at its end; full: "
                             "every evaluation on the whole split, a run's value the best of them", choices=EVALUATIONS)
    seed: int = option(0, "seed of the subsets, the sampler and training")
    precision: str = option("auto", "auto: frozen weights and autocast in bf16 where the machine computes in it natively (a GPU, "
                            "or a CPU with AMX or AVX512-BF16), float32 elsewhere; bf16 or fp32 force one", choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the model (GPU; compiled once per process, reused by later trials)")

    def check(self) -> None:
        super().check()
        if self.labels is not None and (len(set(self.labels)) != len(self.labels) or len(self.labels) < 2 or not all(self.labels)):
            raise UsageError(f"--labels {','.join(self.labels)!r}: give two or more distinct names, comma-separated")


@dataclass(kw_only=True)
class Storage(Settings):
    """storage and outputs"""

    storage: str = option("sqlite:///storage/emotion.db",
                          "Optuna storage: any SQLAlchemy URL (sqlite, postgresql, mysql+pymysql) or a .journal file")
    artifact_store: str | None = option(None, "where what another machine may need goes (each trial's newest checkpoint, the final "
                                        "model, report and plots): a folder (a filesystem every machine mounts) or s3://bucket/prefix "
                                        "(the AWS_* variables name the endpoint and keys); default: the one the study was made with, "
                                        "else <output-dir>/<storage>/artifacts")
    output_dir: str = option("storage", "folder for this machine's outputs: <output-dir>/<storage>/<study>/ (final report, logs), caches")

    @property
    def storage_folder(self) -> Path:
        """This machine's folder for the storage's studies: one per storage, so same-named studies in two storages keep
        their outputs apart."""
        return Path(self.output_dir) / storage_key(self.storage)

    @property
    def artifact_location(self) -> str:
        """The artifact store: --artifact-store, else the storage's default folder (one per storage, so that one
        dashboard command serves every study's files)."""
        return self.artifact_store or str((self.storage_folder / "artifacts").resolve())

    @property
    def cache_dir(self) -> Path:
        return Path(self.output_dir) / "cache" / "tokenized"

    @property
    def fingerprint_cache(self) -> Path:
        return Path(self.output_dir) / "cache" / "fingerprints.json"

    def folder_of(self, study_name: str) -> Path:
        """Where a study's outputs go on this machine: a folder name made from the study's name, always inside
        ``storage_folder`` whatever the name holds."""
        return self.storage_folder / safe_name(study_name)


@dataclass(kw_only=True)
class StudyName(Settings):
    """which study"""

    study_name: str | None = option(None, "study name (default for run: <model>-<variant>; for the others: the storage's only "
                                    "or most recently run study)")


@dataclass(kw_only=True)
class Verbosity(Settings):
    """output"""

    verbose: bool = option(False, "show the Trainer's progress bars, library logs and the tracebacks of errors")


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or hidden installation
        return False


@dataclass(kw_only=True)
class Tracking(Settings):
    """trackers"""

    report_to: str = option("none", "also send each trial's training curves (and final's retrainings) to this tracker "
                            "(tensorboard: under <output-dir>/<storage>/<study>/runs; mlflow: the store MLFLOW_TRACKING_URI names, "
                            "e.g. sqlite:///mlflow.db, or MLflow's default)", choices=REPORTERS)

    def check(self) -> None:
        super().check()
        if self.report_to != "none" and not _installed(self.report_to):
            raise UsageError(f"--report-to {self.report_to} needs the {self.report_to} package: "
                             f"pip install 'emotion-study[{self.report_to}]'")


def _variant_help() -> str:
    listed = "; ".join(f"{name}: {variant.summary}" for name, variant in variants.REGISTRY.items())
    return (f"what trains ({listed}); several, comma-separated (lora,qlora), make the variant a parameter of the search; "
            f"all = {','.join(variants.DEFAULT_SEARCH)}")


@dataclass(kw_only=True)
class StudySettings(Sources, Budget, Storage, StudyName, Tracking, Verbosity):
    """the search"""

    trials: int = option(30, "total finished (complete + pruned) trials the study should hold; a rerun continues up to it", positive=True)
    variant: str = option("lora", _variant_help())
    objective: str = option("accuracy", "accuracy: maximize val accuracy; accuracy,memory: also minimize peak training memory "
                            "(a Pareto front, no pruning)", choices=tuple(OBJECTIVES), metavar="accuracy|accuracy,memory")
    pruner: str = option("median", "early stopping of bad trials (median: the one that kept the best trial on the bench)", choices=PRUNERS)
    sampler: str = option("tpe", "how parameters are chosen", choices=SAMPLERS)
    baseline: bool = option(True, "a new study's first trials are each variant's default parameters, never pruned: what tuning "
                            "bought is measured against them")
    patience: int = option(10, "stop starting trials once this many in a row finished without a significantly better best "
                           "(McNemar p < 0.05 on the validation sentences); 0: run all --trials")
    timeout: float | None = option(None, "stop starting new trials after this many seconds", positive=True)
    workers: int = option(1, "worker processes on this machine sharing the study (one per GPU where there are several); SQLite "
                          "takes one writer, so use a journal file (--storage storage/emotion.journal) or PostgreSQL/MySQL, "
                          "which also serve workers on several machines", positive=True)
    target_modules: list[str] | None = option(None, "LoRA target modules, a fixed value of lora_targets (attention: peft's "
                                              "defaults for the model type, or all-linear)", nargs="+")
    search: dict[str, Any] | None = option(None, "the search space, changed from the default key by key: each parameter a range "
                                           "{low, high, log}, {choices: [...]} or a fixed value, a variant's own under its name "
                                           "(a study file's search: section, or YAML here)")
    models: list[str] | None = option(None, "several base models (hub ids or local folders), each with its own tokenizer: the model "
                                      "becomes a parameter of the search beside the variant; the same as --model A,B", nargs="+")

    # Settings that change what a trial's value means: a stored study refuses a run that differs in any of them. The
    # model, tokenizer and data are compared by content (SOURCES: study._inputs.fingerprints), not by path, so that each
    # machine may keep them where it likes.
    IDENTITY = ("model", "tokenizer", "data", "variant", "epochs", "batch_size", "max_train_samples", "max_eval_samples", "target_modules",
                "objective", "evaluation", "max_length", "labels", "search")
    SOURCES = ("model", "tokenizer", "data")
    # The study's definition, stored with it: its identity and how it searches. A run given only --storage and
    # --study-name takes these from the stored study (study._studies.join_definition); the rest is this machine's.
    DEFINITION = (*IDENTITY, "trials", "pruner", "sampler", "baseline", "patience", "seed")
    # What a study made before a setting existed ran with.
    EARLIER = {"objective": "accuracy", "evaluation": "full", "max_length": 128, "labels": None, "search": None}

    def check(self) -> None:
        super().check()
        if self.models:  # one home for the models: --model A,B
            self.model, self.models = ",".join(self.models), None
        if self.patience < 0:
            raise UsageError(f"--patience must be 0 (off) or positive, got {self.patience}")
        models = self.searched_models()
        if not models or len(set(self.model_labels())) != len(models):
            raise UsageError(f"--model {self.model!r}: name one model, or several distinct ones comma-separated")
        if len(models) > 1 and self.tokenizer:
            raise UsageError("--tokenizer names one tokenizer, and several models each take their own: leave it out")
        unknown = [v for v in self.searched_variants() if v not in variants.REGISTRY]
        if unknown or not self.searched_variants():
            raise UsageError(f"--variant {self.variant!r}: unknown {', '.join(map(repr, unknown)) or 'variant'}; "
                             f"choose from {', '.join(variants.names())}, several comma-separated, or all")
        if self.workers > 1 and is_sqlite(self.storage):
            raise UsageError(
                f"--workers {self.workers} needs storage that takes several writers, and SQLite takes one at a time "
                "(\"database is locked\"). On this machine use a journal file: --storage storage/emotion.journal; "
                "on one or several machines, PostgreSQL or MySQL: --storage postgresql://user@host/db or mysql+pymysql://user@host/db"
            )
        self.space()  # a mistake in the search section fails here, naming its key

    def searched_models(self) -> tuple[str, ...]:
        """The base models the study trains: one, or several that the search chooses among."""
        return tuple(m.strip() for m in self.model.split(",") if m.strip())

    def model_labels(self) -> tuple[str, ...]:
        """What trials, reports and folder names call each searched model: its folder's or hub id's last part. A
        trial's ``model`` parameter is a label, so that machines keeping the models at other paths share the study."""
        return tuple(model_label(m) for m in self.searched_models())

    def model_of(self, params: dict[str, Any]) -> str:
        """The base model a trial's (or a chosen trial's) parameters train: its ``model`` label, else the only one."""
        models = self.searched_models()
        label = params.get("model")
        return models[self.model_labels().index(label)] if label is not None else models[0]

    def for_model(self, model: str) -> StudySettings:
        """These settings with one base model (what a trial of that model trains with; data prepared for it)."""
        return dataclasses.replace(self, model=model, tokenizer=self.tokenizer if len(self.searched_models()) == 1 else None)

    def searched_variants(self) -> tuple[str, ...]:
        """The variants the study trains: one, or several that the search chooses among."""
        if self.variant == "all":
            return variants.DEFAULT_SEARCH
        return tuple(v.strip() for v in self.variant.split(",") if v.strip())

    def space(self) -> SearchSpace:
        """What the study searches: the default space, changed by the search section, with --target-modules fixed."""
        flags = {"lora_targets": ("--target-modules", list(self.target_modules))} if self.target_modules else {}
        space = SearchSpace.from_dict(self.search, self.searched_variants(), flags)
        return dataclasses.replace(space, models=self.model_labels()) if len(self.model_labels()) > 1 else space

    def resolved_study_name(self) -> str:
        if self.study_name:
            return self.study_name
        model = "+".join(self.model_labels())
        suffix = "-" + self.objective.replace(",", "-") if self.multi_objective else ""  # its trials' values mean another thing
        return re.sub(r"[^A-Za-z0-9_.+-]+", "-", f"{model}-{self.variant}{suffix}")

    def identity(self) -> dict:
        """The identity settings, local paths made absolute (another command, run elsewhere in the tree, finds them)."""
        definition = self.definition()
        return {key: definition[key] for key in self.IDENTITY}

    def definition(self) -> dict:
        """The definition settings (DEFINITION), local paths made absolute: what the study stores."""
        values = asdict(self)
        for key in self.SOURCES:
            if values[key] is not None:
                values[key] = ",".join(str(local_path(v).resolve()) if looks_like_path(v) else v for v in values[key].split(","))
        # The search section in its canonical form: None where it leaves the default space as it is.
        values["search"] = SearchSpace.from_dict(self.search, self.searched_variants()).to_dict() or None
        return {key: values[key] for key in self.DEFINITION}

    def pruning_eval_size(self, n_validation: int) -> int | None:
        """How many validation sentences the pruner's evaluations use; None: the whole split."""
        if self.evaluation == "full":
            return None
        size = max(PRUNING_EVAL_MIN, math.ceil(n_validation / 3))
        return size if size < n_validation else None

    def train_config(self, params: dict[str, Any], n_validation: int | None = None) -> TrainConfig:
        """The TrainConfig of one trial: these settings plus the trial's (or a chosen trial's) parameters and the values
        the space fixes; a searched epochs or batch size replaces the budget's. What the trial does not set takes its
        default (the variant's learning rate, TrainConfig's)."""
        name = params.get("variant", self.searched_variants()[0])
        values = {"epochs": self.epochs, "batch_size": self.batch_size, **params, **self.space().fixed(name)}
        return TrainConfig(
            model=self.model_of(params),
            variant=name,
            **{key: values[key] for key in OPTIMIZER if key in values},
            variant_params=variants.get(name).params_of(values),
            seed=self.seed,
            compile=self.compile,
            precision=self.precision,
            verbose=self.verbose,
            keep="last" if self.evaluation == "subset" else "best",
            pruning_eval_size=self.pruning_eval_size(n_validation) if n_validation else None,
        )

    @property
    def directions(self) -> list[str]:
        return list(OBJECTIVES[self.objective])

    @property
    def metric_names(self) -> list[str]:
        return list(METRIC_NAMES[self.objective])

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @property
    def study_dir(self) -> Path:
        return self.folder_of(self.resolved_study_name())


@dataclass(kw_only=True)
class FinalSettings(LocalSources, Storage, StudyName, Tracking, Verbosity):
    """retraining"""

    trial: int | None = option(None, "retrain this completed trial instead of the best (or the front's most accurate)")
    top: int = option(1, "retrain the K best completed trials, keep the one whose retraining validates best, and test only "
                      "that one (a guard against picking the trial that the validation noise favoured)", positive=True)
    seeds: int = option(1, "retrain with this many seeds (the ones after the study's) and report the mean test accuracy, its "
                        "standard deviation and a 95% bootstrap interval over test sentences and seeds; the first seed's model "
                        "is the one saved", positive=True)
    max_train_samples: int | str | None = option(None, "train the final model on a seeded subset of this many training sentences, "
                                                 "or all: the whole training split (default: the study's budget); the validation "
                                                 "subset and the tokens a text keeps stay the study's", metavar="N|all",
                                                 parse=parse_train_samples)
    epochs: float | None = option(None, "epochs of the final training (default: the study's)", positive=True)
    batch_size: int | None = option(None, "batch size of the final training (default: the study's)", positive=True)
    against_defaults: bool = option(False, "also train the study's baseline parameters (the kept trial's variant's defaults) at "
                                    "the final budget with the same seeds, test both once, and report the paired gain: points, a "
                                    "95%% interval over test sentences and seeds, McNemar's p")
    keep: str = option("tuned", "with --against-defaults, which of the two becomes the final model", choices=("tuned", "defaults"))

    def check(self) -> None:
        super().check()
        if self.trial is not None and self.top > 1:
            raise UsageError("--trial N retrains one trial; --top K picks among the K best: pass one of them")
        check_train_samples("max_train_samples", self.max_train_samples)
        if self.keep == "defaults" and not self.against_defaults:
            raise UsageError("--keep defaults keeps the model trained with the defaults: pass --against-defaults too")


@dataclass(kw_only=True)
class ReportSettings(Storage, StudyName):
    """the report"""

    top: int = option(10, "how many trials the leaderboard shows", positive=True)
    plots: str | None = option(None, "save optimization history, intermediate values, importances and Pareto plots here", metavar="DIR")
    json: bool = option(False, "print the report as JSON instead of text")


@dataclass(kw_only=True)
class PredictSettings(Storage, StudyName, Verbosity):
    """prediction"""

    texts: list[str] = option([], "sentences to classify (default: one per line from stdin)", positional=True, nargs="*", metavar="TEXT")
    model: str | None = option(None, "the study's model on this machine, if not where the study was run (compared by content)")


@dataclass(kw_only=True)
class CompareSettings(Sources, Budget, Storage, Verbosity):
    """the comparison"""

    variants: list[str] | None = option(None, f"what to compare, in order (default: {' '.join(variants.DEFAULT_SEARCH)}, or every "
                                        "variant the studies hold)", nargs="+", choices=variants.names())
    from_study: list[str] | None = option(None, "take each variant's best trial from these studies in --storage (one that searched "
                                          "several variants, or one per variant), and their budget", nargs="+", metavar="NAME")
    seeds: int = option(1, "seeds per variant", positive=True)
    target_modules: list[str] | None = option(None, "LoRA target modules (attention: peft's defaults for the model type, or all-linear)",
                                              nargs="+")
    out: str | None = option(None, "folder for compare.md/json/png (default: <output-dir>/compare/<model or first study>)")

    def study(self, **changes: Any) -> StudySettings:
        """The StudySettings these stand for (what a study with this budget would train)."""
        shared = {f.name for f in dataclasses.fields(StudySettings)}
        return StudySettings(**{**{k: v for k, v in asdict(self).items() if k in shared}, **changes})


BENCH_PARTS = ("throughput", "head", "pruning", "stopping", "take-home", "report")


@dataclass(kw_only=True)
class BenchSettings(Sources, Budget, Storage, StudyName, Verbosity):
    """the bench"""

    max_train_samples: int | None = like(Budget, "max_train_samples", 2000)
    max_eval_samples: int | None = like(Budget, "max_eval_samples", 500)
    epochs: float = like(Budget, "epochs", 1.0)
    parts: list[str] = option(["throughput", "head", "pruning"], "what to measure (stopping replays a stored study: --storage, "
                              "--study-name; take-home runs a fresh study of --trials on the budget above, then final on "
                              "--final-max-train-samples x --final-epochs)", nargs="+", choices=BENCH_PARTS)
    variant: str = option("lora", "variant of the throughput part", choices=variants.names())
    learning_rate: float | None = option(None, "learning rate of the throughput trials (default: the variant's)", positive=True)
    compare_compile: bool = option(False, "also run the project's trials compiled, and say whether compiling pays")
    repeats: int = option(1, "project trials in a row in one process: the first pays for compiling", positive=True)
    trial_epochs: float = option(3.0, "epochs of the head and pruning trials", positive=True)
    head_learning_rate: float | None = option(None, "learning rate of the head trials (default: the head's, "
                                              f"{variants.get('head').default_learning_rate:g})", positive=True)
    trials: int = option(12, "trials of each pruning study", positive=True)
    pruning_variant: str | None = option(None, "variant of the pruning studies (default: --variant)", choices=variants.names())
    pruner: str = option("median", "the pruner to compare with none", choices=("halving", "median", "hyperband"))
    final_max_train_samples: int | str = option("all", "take-home: the final's training sentences (N or all)", metavar="N|all",
                                                parse=parse_train_samples)
    final_epochs: float | None = option(None, "take-home: the final's epochs (default: --epochs)", positive=True)
    threads: int | None = option(None, "CPU threads of torch, for both sides (default: torch's own choice)", positive=True)
    json: str | None = option(None, "write the numbers to this JSON file", metavar="FILE")

    def check(self) -> None:
        super().check()
        check_train_samples("final_max_train_samples", self.final_max_train_samples)
        if self.json is not None and not Path(self.json).parent.exists():
            raise UsageError(f"--json: folder {Path(self.json).parent} does not exist")

    def study(self, **changes: Any) -> StudySettings:
        shared = {f.name for f in dataclasses.fields(StudySettings)}
        values = {k: v for k, v in asdict(self).items() if k in shared and k not in ("trials", "pruner", "study_name")}
        return StudySettings(**{**values, **changes})
