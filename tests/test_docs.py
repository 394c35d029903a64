"""The manual tells the truth about the code: every emotion-study (or python -m study.X) command line in README.md and
docs/ parses with the current CLI, every file, folder and module it cites exists, its Python snippet runs, and it
speaks of the product only."""

import re
import shlex
from pathlib import Path

import pytest

from study.cli import build_parser, command

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "deploy").glob("*/README.md"))]
SUBCOMMANDS = "run|final|report|predict|compare|bench"
COMMAND = re.compile(rf"(?<![\w./-])(?:emotion-study(?= (?:{SUBCOMMANDS}|COMMAND|--help)\b| *$)|python -m study\.(?:{SUBCOMMANDS})\b)")


def code_lines(text: str) -> list[str]:
    """The lines of fenced code blocks (continuations joined) and the `inline code` spans."""
    lines, block = [], None
    for line in text.splitlines():
        if line.startswith("```") and block is None:
            block = []
        elif line.startswith("```"):
            lines += _joined(block)
            block = None
        elif block is not None:
            block.append(line)
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return lines


def _joined(block: list[str]) -> list[str]:
    out, current = [], ""
    for line in block:
        current += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            out.append(current)
            current = ""
    return out


def command_lines(path: Path) -> list[str]:
    found = []
    for line in code_lines(path.read_text()):
        line = line.split(" #")[0]  # a shell comment is words, not flags
        for match in COMMAND.finditer(line):
            found.append(line[match.start():].split(" | ")[0].split(" && ")[0].split(" > ")[0].strip())
    return found


def cli_args(line: str) -> list[str]:
    """The arguments emotion-study gets from a documented line, shell variables and placeholders given values."""
    line = re.sub(r"\$\(?\{?([A-Za-z_]+)\}?\)?", "placeholder", line)
    words = [word for word in shlex.split(line) if word != "..."]  # "...": more flags
    if words[0] == "emotion-study":
        return words[1:]
    return [words[2].removeprefix("study."), *words[3:]]  # python -m study.X ...


def all_commands() -> list[tuple[str, str]]:
    return [(path.relative_to(ROOT).as_posix(), line) for path in DOCS for line in command_lines(path)]


def test_the_manual_has_command_lines_to_check():
    commands = all_commands()
    assert len(commands) > 20 and any("emotion-study run" in line for _, line in commands)


@pytest.mark.parametrize("where,line", all_commands())
def test_every_documented_command_line_parses(where, line, capsys, tmp_path):
    args = cli_args(line)
    if args in ([], ["COMMAND", "--help"]) or args[-1:] == ["--help"]:
        return
    if args[0] == "COMMAND" or "[" in line:  # a usage pattern, not a command
        return
    if "--config" in args:  # a file that another documented line printed: here, the one the command's defaults make
        parser = command(args[0]).parser()
        args[args.index("--config") + 1] = str(tmp_path / "settings.yaml")
        (tmp_path / "settings.yaml").write_text(parser.dump(parser.get_defaults()))
    try:
        build_parser().parse_args(args)
    except SystemExit as exit_info:  # 0: it parsed, and printed what --print-config asks for
        if exit_info.code != 0:
            pytest.fail(f"{where}: `{line}` does not parse: {capsys.readouterr().err.strip().splitlines()[-1:]}")


CITED_PATH = re.compile(r"`((?:study|emotion_core|tests|docs|deploy|scripts)/[\w./\-]*)`")
CITED_MODULE = re.compile(r"`((?:study|emotion_core)(?:\.[A-Za-z_]\w*)+)`")


def test_every_cited_file_and_module_exists():
    import importlib

    missing = []
    for path in DOCS:
        text = path.read_text()
        for cited in CITED_PATH.findall(text):
            if not (ROOT / cited.split("::")[0].rstrip(".")).exists() and not any(ROOT.glob(cited)):
                missing.append(f"{path.name}: {cited}")
        for cited in CITED_MODULE.findall(text):
            parts = cited.split(".")
            for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for name in parts[cut:]:
                        obj = getattr(obj, name)
                except AttributeError:
                    missing.append(f"{path.name}: {cited}")
                break
            else:
                missing.append(f"{path.name}: {cited}")
    assert not missing, missing


LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def test_every_linked_file_exists():
    missing = [f"{path.relative_to(ROOT)}: {target}" for path in DOCS for target in LINK.findall(path.read_text())
               if "://" not in target and not (path.parent / target).exists()]
    assert not missing, missing


def test_the_readme_is_a_manual_of_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


SPEAKS_OF_DEVELOPMENT = re.compile(r"\bthe issue\b|\bissue \d|#\d+\b|\blent\b|\bsession\b|this machine's|the write-up|\.\./shared|"
                                   r"offline-models|not yet run|\bwe (?:tried|found)\b", re.I)


def test_the_manual_speaks_of_the_product_only():
    found = [f"{path.name}:{number}: {line.strip()}" for path in DOCS
             for number, line in enumerate(path.read_text().splitlines(), start=1) if SPEAKS_OF_DEVELOPMENT.search(line)]
    assert not found, found


def test_the_readme_python_snippet_runs(tiny_model, data_folder):
    """The snippet with the tiny model and the synthetic data in place of gpt2 and dair-ai/emotion."""
    text = (ROOT / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    snippet = snippet.replace('"gpt2"', repr(tiny_model)).replace('"dair-ai/emotion"', repr(data_folder))
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # noqa: S102 - the manual's own example
    result = namespace["result"]
    assert 0 <= result.val_accuracy <= 1 and 0 <= result.test["accuracy"] <= 1


def section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def installs_test_extra(line: str) -> bool:
    return re.search(r"\bpip install (?:-\S+ )*(?:-e )?['\"]?\.\[test\]", line) is not None


def test_the_readme_test_section_installs_what_it_runs():
    """Run after the Install section (which installs no extra), the Test section installs the test extra, pytest in it,
    before its pytest line; .ci/run, the CI, does the same and runs that same line."""
    import tomllib

    lines = [line.split(" #")[0].strip() for line in code_lines(section((ROOT / "README.md").read_text(), "Test"))]
    pytest_at = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert any(installs_test_extra(line) for line in lines[:pytest_at]), lines
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert any(re.match(r"pytest\b", requirement) for requirement in extra), extra
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert lines[pytest_at] in ci
    assert any(installs_test_extra(line) for line in ci[:ci.index(lines[pytest_at])])


def test_the_checker_refuses_a_line_with_a_flag_that_does_not_exist():
    assert command_lines_of("see `emotion-study run --trials 3 --no-such-flag` there") == ["emotion-study run --trials 3 --no-such-flag"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(cli_args("emotion-study run --trials 3 --no-such-flag"))


def command_lines_of(text: str) -> list[str]:
    path = Path(__file__).with_name(".docs-check.md")
    try:
        path.write_text(text)
        return command_lines(path)
    finally:
        path.unlink()
