"""Imports only go down: the emotion-study entry point -> commands -> study's shared machinery -> what it stands on
(settings, records, storage, the trial's parts) -> emotion_core, with no cycle anywhere and no command imported by
anything but the entry point. Read from the source (every import, those inside functions too)."""

import ast
import pkgutil
from pathlib import Path

import emotion_core
import study

ROOT = Path(__file__).resolve().parents[1]
ENTRY = {"cli", "__main__"}
COMMANDS = {"run", "final", "report", "predict", "compare", "bench"}
SHARED = {"_studies", "_inputs", "_retraining", "_final_model", "_tuning", "_preload", "_show", "_show.progress",
          "_show.plots", "_trials.loop", "_trials.workers"}
LAYERS = {"entry": 4, "commands": 3, "shared": 2, "below": 1, "emotion_core": 0}


def project_modules() -> set[str]:
    names = {"emotion_core", "study"}
    for package in (emotion_core, study):
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            names.add(info.name)
    return names


def layer(module: str) -> str:
    if module == "emotion_core" or module.startswith("emotion_core."):
        return "emotion_core"
    leaf = module.removeprefix("study.")
    for name, members in (("entry", ENTRY), ("commands", COMMANDS), ("shared", SHARED)):
        if leaf in members:
            return name
    return "below"  # settings, records, the storage, the trial's parts, errors, Optuna's private names


def source_of(module: str) -> Path:
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports(module: str, known: set[str], source: str | None = None) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source if source is not None else source_of(module).read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module in known:
            for alias in node.names:  # `from study import errors` imports the module study.errors
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found - {module}


def import_graph() -> dict[str, set[str]]:
    known = project_modules()
    return {module: imports(module, known) for module in known}


def test_every_import_goes_down_or_sideways_and_no_command_is_imported():
    upward, of_commands = [], []
    for module, targets in import_graph().items():
        for target in targets:
            if LAYERS[layer(target)] > LAYERS[layer(module)]:
                upward.append(f"{module} -> {target}")
            if layer(target) == "commands" and layer(module) != "entry":
                of_commands.append(f"{module} -> {target}")
    assert not upward, f"imports of a higher layer: {upward}"
    assert not of_commands, f"commands are leaves under the entry point, yet imported: {of_commands}"


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import_inside_a_function():
    """The rule itself can fail: a core module that imported a command, even inside a function, would be caught."""
    source = source_of("emotion_core.labels").read_text() + "\n\ndef later():\n    from study import run\n"
    found = imports("emotion_core.labels", project_modules(), source)
    assert found == {"study.run"} and LAYERS[layer("study.run")] > LAYERS[layer("emotion_core.labels")]
