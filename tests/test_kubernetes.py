"""deploy/kubernetes/ and deploy/Dockerfile, checked offline (no cluster, no Docker engine):

- every manifest validates against the Kubernetes schemas of one fixed version (kubernetes-validate, strict: a
  misspelled or misplaced field is an error, not a field the API server would drop);
- every container that runs emotion-study gets a command line that the project's CLI parses and whose settings pass
  their own checks, and every optuna-dashboard flag is one that `optuna-dashboard --help` lists;
- the manifests fit together: each $(VAR) a command uses is defined in its container, each Secret key, volume claim
  and mount path it needs exists, each Service selects pods that some manifest makes;
- the Dockerfile's ENTRYPOINT is emotion-study and the image its build instruction tags is the one the manifests run.

The checking functions are shown to fail on a broken manifest and a broken command, so that a pass means something.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emotion_core.errors import InputError
from study._command import settings_from
from study.cli import build_parser, command

try:
    import kubernetes_validate
except ImportError as error:  # not installed, or a dependency of it missing: say which
    pytest.skip(f"kubernetes-validate cannot be imported ({error}; pip install -e '.[test]'): the manifests cannot be "
                "checked against the Kubernetes schemas", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
MANIFEST_DIR = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
MANIFEST_FILES = sorted(MANIFEST_DIR.glob("*.yaml"))

# The Kubernetes version whose schemas the manifests are checked against: the oldest that the test extra's
# kubernetes-validate>=1.28 is sure to ship, so that every installation checks against the same schemas (the package
# would otherwise quietly fall back to the newest version it has that is not newer than the one asked for).
KUBERNETES_VERSION = "1.28.0"

# Kinds whose objects make pods, and where in them the pod spec is.
POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Job": ("spec", "template", "spec"),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
# The database drivers an SQLAlchemy URL may name, and the pip package that brings each.
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg", "pymysql": "pymysql", "mysqldb": "mysqlclient"}


# ---------------------------------------------------------------------------------------------------------------------
# Reading the manifests


def load_documents(path: Path) -> list[dict]:
    """The objects of a (multi-document) YAML file; empty documents (a trailing ---) are left out."""
    with path.open() as handle:
        return [document for document in yaml.safe_load_all(handle) if document is not None]


def all_resources() -> list[tuple[str, dict]]:
    return [(path.name, resource) for path in MANIFEST_FILES for resource in load_documents(path)]


def resource_id(resource: dict) -> str:
    return f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"


def pod_spec(resource: dict) -> dict | None:
    path = POD_SPEC_PATHS.get(resource.get("kind"))
    if path is None:
        return None
    spec = resource
    for key in path:
        spec = spec[key]
    return spec


def all_containers() -> list[tuple[str, dict, dict]]:
    """(where, container, pod spec) for every container and init container of every pod-making manifest."""
    found = []
    for filename, resource in all_resources():
        spec = pod_spec(resource)
        if spec is None:
            continue
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            found.append((f"{filename}: {resource_id(resource)}: {container['name']}", container, spec))
    return found


# ---------------------------------------------------------------------------------------------------------------------
# Schema validation


def validate(resource: dict) -> str:
    """Validate one object against KUBERNETES_VERSION's schemas, strictly; returns the version validated against.

    Raises kubernetes_validate.ValidationError for an object the schemas reject, and SchemaNotFoundError for a kind or
    apiVersion that version does not know (kubernetes-validate's own command line only warns about that: here it is
    an error, since the API server would refuse the object too)."""
    version = kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    assert version == KUBERNETES_VERSION.rsplit(".", 1)[0], f"validated against {version}, not {KUBERNETES_VERSION}"
    return version


def test_the_manifests_are_all_there():
    names = {path.name for path in MANIFEST_FILES}
    assert {"postgres.yaml", "secret.example.yaml", "artifacts-pvc.yaml", "worker-job.yaml", "dashboard.yaml"} <= names
    kinds = sorted(resource["kind"] for _, resource in all_resources())
    assert kinds == sorted(["PersistentVolumeClaim", "Deployment", "Service", "Secret", "PersistentVolumeClaim", "Job",
                            "Deployment", "Service"])


@pytest.mark.parametrize("filename,resource", all_resources(), ids=lambda value: value if isinstance(value, str) else resource_id(value))
def test_every_manifest_validates_against_the_kubernetes_schemas(filename, resource):
    try:
        validate(resource)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        pytest.fail(f"{filename}: {resource_id(resource)}: {where}: {error.message}")
    except kubernetes_validate.SchemaNotFoundError as error:
        pytest.fail(f"{filename}: {error.message}")


def worker_job() -> dict:
    return next(resource for _, resource in all_resources() if resource["kind"] == "Job")


def test_the_validation_rejects_a_broken_manifest():
    """The same validate() refuses a Job whose parallelism is a word, a misspelled field, and an unknown kind."""
    broken = copy.deepcopy(worker_job())
    broken["spec"]["parallelism"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError) as caught:
        validate(broken)
    assert list(caught.value.path) == ["spec", "parallelism"]

    misspelled = copy.deepcopy(worker_job())
    misspelled["spec"]["paralellism"] = misspelled["spec"].pop("parallelism")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(misspelled)

    container = copy.deepcopy(worker_job())
    container["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(container)

    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate({**copy.deepcopy(worker_job()), "apiVersion": "batch/v7"})


def test_the_worker_job_is_a_pool_of_one_gpu_workers():
    """What the deployment relies on: N workers at once, each restarted in place on failure, with one GPU, given time
    to mark its trial interrupted on SIGTERM."""
    job = worker_job()
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert spec["parallelism"] == spec["completions"] >= 2
    assert spec["backoffLimit"] >= spec["parallelism"]
    assert pod["restartPolicy"] == "OnFailure"
    assert pod["terminationGracePeriodSeconds"] >= 60
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    storage = next(env for env in container["env"] if env["name"] == "STORAGE_URL")
    assert storage["valueFrom"]["secretKeyRef"]["key"] == "storage-url"


# ---------------------------------------------------------------------------------------------------------------------
# Container command lines


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) for each instruction of the Dockerfile, continuation lines joined, comments left out."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        current += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            keyword, _, rest = current.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            current = ""
    return instructions


def exec_form(instruction: str) -> list[str]:
    """An ENTRYPOINT or CMD in its JSON (exec) form; the shell form would run under /bin/sh -c, and the signals meant
    for the worker would go to the shell."""
    values = [rest for keyword, rest in dockerfile_instructions() if keyword == instruction]
    assert values, f"the Dockerfile has no {instruction}"
    parsed = json.loads(values[-1])
    assert isinstance(parsed, list) and all(isinstance(word, str) for word in parsed), f"{instruction} {values[-1]}"
    return parsed


def built_image() -> str:
    """The tag the Dockerfile's own build instruction (in its comments) gives the image."""
    comments = [line.lstrip("#").strip() for line in DOCKERFILE.read_text().splitlines() if line.startswith("#")]
    builds, current = [], None
    for line in comments:
        if current is None and line.startswith("docker build "):
            current = ""
        if current is not None:
            current += line.rstrip("\\") + " "
            if not line.endswith("\\"):
                builds.append(current)
                current = None
    tags = {match for build in builds for match in re.findall(r"(?:-t|--tag)[ =](\S+)", build)}
    assert len(tags) == 1, f"the Dockerfile's build instructions tag {sorted(tags) or 'no image'}"
    return tags.pop()


def plausible_values() -> dict[str, str]:
    """A value for each variable a container may reference: the storage URL is the example Secret's."""
    secret = next(resource for _, resource in all_resources() if resource["kind"] == "Secret")
    return {"STORAGE_URL": secret["stringData"]["storage-url"]}


def expand(word: str, defined: set[str], values: dict[str, str], undefined: list[str]) -> str:
    """Kubernetes' expansion of command and args: $(VAR) becomes the variable's value when the container defines VAR,
    and stays as it is otherwise (such a reference is collected in `undefined`); $$ is a literal $."""

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in defined:
            undefined.append(name)
            return match.group(0)
        return values.get(name, f"value-of-{name}")

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", substitute, word)


def command_line(container: dict, undefined: list[str] | None = None) -> list[str]:
    """What the container runs, as Kubernetes puts it together: command (else the image's ENTRYPOINT) and args (else,
    when command is not given either, the image's CMD), with $(VAR) references expanded."""
    undefined = [] if undefined is None else undefined
    ours = container["image"] == built_image()
    command = container.get("command")
    args = container.get("args")
    if command is None:
        if not ours:
            return []  # another image's entrypoint (postgres): not ours to check
        command = exec_form("ENTRYPOINT")
        if args is None:
            args = exec_form("CMD")
    defined = {env["name"] for env in container.get("env", [])}
    values = plausible_values()
    return [expand(str(word), defined, values, undefined) for word in [*command, *(args or [])]]


def check_emotion_study(argv: list[str]) -> object:
    """emotion-study's own parser takes argv (the words after emotion-study), and the settings it gives pass their
    checks; returns the settings. An AssertionError names what was refused."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as error:
        raise AssertionError(f"emotion-study {shlex.join(argv)}: the CLI refuses it (exit {error.code})") from None
    try:
        return settings_from(command(args.command).settings, args[args.command])
    except InputError as error:  # a UsageError: a value the flags take but the settings refuse
        raise AssertionError(f"emotion-study {shlex.join(argv)}: {error}") from None


def dashboard_flags() -> set[str]:
    """The long options that `optuna-dashboard --help` lists."""
    executable = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120, check=True)
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", result.stdout))
    assert {"--artifact-dir", "--host", "--port"} <= flags, result.stdout
    return flags


def check_dashboard(argv: list[str], flags: set[str]) -> None:
    """Every option in argv (the words after optuna-dashboard) is one the dashboard has, and one positional, the
    storage URL, is given. An AssertionError names what is wrong."""
    unknown = [word for word in argv if word.startswith("-") and word.split("=")[0] not in flags]
    assert not unknown, f"optuna-dashboard has no {', '.join(unknown)} (it has {', '.join(sorted(flags))})"
    takes_value = {"--storage-class", "--port", "--host", "--server", "--artifact-dir", "--from-config"}
    positional, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            positional.append(word)
    assert len(positional) == 1, f"optuna-dashboard {shlex.join(argv)}: one storage URL expected, got {positional}"


def program(argv: list[str]) -> str:
    return Path(argv[0]).name if argv else ""


def mount_paths(container: dict) -> set[str]:
    return {mount["mountPath"] for mount in container.get("volumeMounts", [])}


def test_every_container_reference_to_a_variable_is_defined():
    """$(VAR) of an undefined VAR is passed on verbatim by Kubernetes: the worker would get "$(STORAGE_URL)" as its
    storage."""
    for where, container, _ in all_containers():
        undefined: list[str] = []
        command_line(container, undefined)
        assert not undefined, f"{where}: $({'), $('.join(undefined)}) not defined in the container's env"


def test_every_emotion_study_command_parses_with_the_cli():
    checked = 0
    for where, container, _ in all_containers():
        argv = command_line(container)
        if program(argv) != "emotion-study":
            continue
        args = check_emotion_study(argv[1:])
        checked += 1
        if argv[1] == "run":
            assert args.workers == 1, f"{where}: each pod is one worker: --workers 1"
            assert args.storage == plausible_values()["STORAGE_URL"], f"{where}: the storage is the Secret's"
            # The folders the command writes are volumes: the shared store (unless it is S3) and the scratch folder.
            assert args.artifact_store.startswith("s3://") or args.artifact_store in mount_paths(container), where
            assert args.output_dir in mount_paths(container), where
    assert checked >= 1, "no container runs emotion-study"


def test_every_optuna_dashboard_command_has_only_flags_the_dashboard_knows():
    flags = dashboard_flags()
    checked = 0
    for where, container, _ in all_containers():
        argv = command_line(container)
        if program(argv) != "optuna-dashboard":
            continue
        check_dashboard(argv[1:], flags)
        checked += 1
        options = dict(itertools.pairwise(argv[1:]))
        assert argv[1] == plausible_values()["STORAGE_URL"], f"{where}: the storage is the Secret's"
        assert options.get("--host") == "0.0.0.0", f"{where}: a Service reaches only a pod address, not its loopback"
        assert int(options["--port"]) in {port["containerPort"] for port in container.get("ports", [])}, where
        if "--artifact-dir" in options:
            assert options["--artifact-dir"] in mount_paths(container), where
    assert checked >= 1, "no container runs optuna-dashboard"


def test_the_command_checks_refuse_a_broken_command():
    with pytest.raises(AssertionError, match="refuses"):
        check_emotion_study(["run", "--workers", "1", "--no-such-flag"])
    with pytest.raises(AssertionError, match="variant"):
        check_emotion_study(["run", "--variant", "no-such-variant"])
    with pytest.raises(AssertionError, match="--no-such-flag"):
        check_dashboard(["postgresql+psycopg2://u@h/d", "--no-such-flag"], dashboard_flags())
    broken = copy.deepcopy(worker_job()["spec"]["template"]["spec"]["containers"][0])
    broken["env"] = [env for env in broken["env"] if env["name"] != "STORAGE_URL"]
    undefined: list[str] = []
    assert "$(STORAGE_URL)" in command_line(broken, undefined) and undefined == ["STORAGE_URL"]


# ---------------------------------------------------------------------------------------------------------------------
# The manifests fit together


def test_every_secret_key_claim_and_service_refers_to_something_that_exists():
    resources = [resource for _, resource in all_resources()]
    secrets = {resource["metadata"]["name"]: {**resource.get("stringData", {}), **resource.get("data", {})}
               for resource in resources if resource["kind"] == "Secret"}
    claims = {resource["metadata"]["name"] for resource in resources if resource["kind"] == "PersistentVolumeClaim"}
    pod_labels = [resource["spec"]["template"]["metadata"]["labels"] for resource in resources if "template" in resource.get("spec", {})]
    for where, container, spec in all_containers():
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] in secrets, f"{where}: no Secret {ref['name']}"
                assert ref.get("optional") or ref["key"] in secrets[ref["name"]], f"{where}: Secret {ref['name']} has no {ref['key']}"
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{where}: mounts {mount['name']}, which the pod does not define"
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{where}: no claim {volume['persistentVolumeClaim']}"
    for resource in resources:
        if resource["kind"] == "Service":
            selector = resource["spec"]["selector"]
            assert any(selector.items() <= labels.items() for labels in pod_labels), f"{resource_id(resource)} selects no pods"
        if resource["kind"] == "Deployment":
            selector = resource["spec"]["selector"]["matchLabels"]
            assert selector.items() <= resource["spec"]["template"]["metadata"]["labels"].items(), resource_id(resource)


def test_the_artifact_store_is_shared_and_the_storage_url_names_a_driver_the_image_has():
    artifacts = next(resource for _, resource in all_resources()
                     if resource["kind"] == "PersistentVolumeClaim" and resource["metadata"]["name"] == "emotion-study-artifacts")
    assert artifacts["spec"]["accessModes"] == ["ReadWriteMany"]  # every worker writes, the dashboard reads

    from sqlalchemy.engine import make_url

    url = make_url(plausible_values()["STORAGE_URL"])
    # Named in the URL: a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1, which optuna-dashboard would look for.
    assert "+" in url.drivername, f"{url.drivername}: name the driver, e.g. postgresql+psycopg2://"
    package = DRIVER_PACKAGES[url.get_dialect().driver]
    installs = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "RUN")
    assert re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", installs), f"the image does not pip install {package}"


# ---------------------------------------------------------------------------------------------------------------------
# The Dockerfile


def test_the_image_runs_emotion_study_and_is_the_one_the_manifests_name():
    assert exec_form("ENTRYPOINT") == ["emotion-study"]
    image = built_image()
    assert image == "emotion-study:latest"
    for where, container, _ in all_containers():
        argv = command_line(container)
        if program(argv) in ("emotion-study", "optuna-dashboard"):
            assert container["image"] == image, f"{where}: runs {container['image']}, the Dockerfile builds {image}"


def test_the_dockerfile_builds_from_the_repository_root_with_the_project_and_its_drivers():
    instructions = dockerfile_instructions()
    base = next(rest for keyword, rest in instructions if keyword == "FROM")
    assert re.fullmatch(r"python:3\.11-slim(?:-\w+)?(?:@\S+)?", base), base
    # Every COPY source exists under the repository root, the build context the build instruction uses.
    for keyword, rest in instructions:
        if keyword == "COPY":
            *sources, _ = [word for word in shlex.split(rest) if not word.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install [^&;]*(?<![\w/-])\.(?=\s|$)", runs), "the project itself is not pip installed"
    for package in ("psycopg2-binary", "boto3"):
        assert package in runs, f"the image does not install {package}"
    # The default torch satisfies the project's own torch range, so `pip install .` keeps the build chosen.
    from packaging.requirements import Requirement

    default = next(rest for keyword, rest in instructions if keyword == "ARG" and rest.startswith("TORCH_SPEC="))
    torch = Requirement(default.partition("=")[2].strip('"'))
    project = next(Requirement(line) for line in _project_dependencies() if Requirement(line).name == "torch")
    pinned = next(iter(torch.specifier)).version
    assert torch.name == "torch" and project.specifier.contains(pinned), f"{torch} is outside the project's {project}"
    args = {rest.partition("=")[0] for keyword, rest in instructions if keyword == "ARG"}
    assert {"TORCH_SPEC", "TORCH_INDEX_URL"} <= args


def _project_dependencies() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
