"""Reading the Dockerfile and .dockerignore without a Docker engine.

Enough of the Dockerfile language for the image checks: stages, ARG/ENV substitution,
WORKDIR, USER, ENTRYPOINT/CMD, and COPY replayed into a directory per stage (RUN steps
cannot run here; they only install dependencies, which the test virtualenv provides).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass
class Stage:
    """One FROM … [AS name] section of a Dockerfile."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


@dataclass
class Dockerfile:
    """A parsed Dockerfile: global ARGs and the stages in order."""

    global_args: dict[str, str]
    stages: list[Stage]

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        text = re.sub(r"\\\n", " ", path.read_text())
        global_args: dict[str, str] = {}
        stages: list[Stage] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keyword, _, args = line.partition(" ")
            keyword, args = keyword.upper(), args.strip()
            if keyword == "FROM":
                words = args.split()
                base = substitute(words[0], global_args)
                named = len(words) == 3 and words[1].upper() == "AS"
                name = words[2] if named else str(len(stages))
                stages.append(Stage(base=base, name=name))
            elif not stages and keyword == "ARG":
                key, _, default = args.partition("=")
                global_args[key] = default
            else:
                stages[-1].instructions.append((keyword, args))
        return cls(global_args, stages)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        [stage] = [s for s in self.stages if s.name == name]
        return stage

    def environment(self, stage: Stage) -> dict[str, str]:
        """ARG defaults and ENV values in effect at the end of ``stage``."""
        values: dict[str, str] = {}
        for keyword, args in stage.instructions:
            _declare(values, keyword, args)
        return values

    def resolved(self, stage: Stage, keyword: str) -> str:
        """The last ``keyword`` instruction of ``stage`` with its variables substituted."""
        values: dict[str, str] = {}
        result = ""
        for key, args in stage.instructions:
            _declare(values, key, args)
            if key == keyword:
                result = substitute(args, values)
        return result

    def exec_form(self, stage: Stage, keyword: str) -> list[str]:
        """ENTRYPOINT / CMD in JSON (exec) form; shell form would break signal handling."""
        [args] = stage.all(keyword)[-1:]
        value = json.loads(args)
        assert isinstance(value, list), f"{keyword} must use the exec (JSON array) form"
        return value

    def replay_copies(self, context: Path, ignore: DockerIgnore, root: Path
                      ) -> tuple[dict[str, Path], list[str]]:
        """Replay every COPY into ``root/<stage>``.

        Returns each stage's filesystem root, and the ``--from`` sources that only RUN steps
        create (such as the virtualenv), which cannot be replayed here.
        """
        filesystems: dict[str, Path] = {}
        made_by_run: list[str] = []
        for stage in self.stages:
            fs = filesystems[stage.name] = root / stage.name
            fs.mkdir(parents=True)
            workdir = PurePosixPath("/")
            for keyword, args in stage.instructions:
                if keyword == "WORKDIR":
                    workdir = workdir / substitute(args, self.environment(stage))
                    (fs / str(workdir).lstrip("/")).mkdir(parents=True, exist_ok=True)
                elif keyword == "COPY":
                    words = shlex.split(args)
                    options = [w for w in words if w.startswith("--")]
                    sources, dest = [w for w in words if not w.startswith("--")][:-1], words[-1]
                    source_stage = next((o.split("=", 1)[1] for o in options
                                         if o.startswith("--from=")), None)
                    target = fs / str(workdir / dest).lstrip("/")
                    for source in sources:
                        if source_stage is None:
                            origin, allowed = context / source, ignore
                        else:
                            origin, allowed = filesystems[source_stage] / source.lstrip("/"), None
                            if not origin.exists():
                                made_by_run.append(source)
                                continue
                        copy_path(origin, target, dest.endswith("/") or len(sources) > 1,
                                  context if source_stage is None else None, allowed)
        return filesystems, made_by_run


def _declare(values: dict[str, str], keyword: str, args: str) -> None:
    """Apply an ARG (its default; build args are not modelled) or ENV to ``values``."""
    if keyword == "ARG":
        key, _, default = args.partition("=")
        values.setdefault(key, substitute(default, values))
    elif keyword == "ENV":
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            values[key] = substitute(value, values)


def substitute(text: str, values: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def copy_path(origin: Path, target: Path, into_directory: bool, context: Path | None,
              ignore: DockerIgnore | None) -> None:
    """Docker COPY semantics: a directory's contents go to target; files respect ignore."""
    def wanted(path: Path) -> bool:
        if ignore is None or context is None:
            return True
        return not ignore.excludes(path.relative_to(context).as_posix())

    if origin.is_dir():
        for path in sorted(origin.rglob("*")):
            if path.is_file() and wanted(path):
                destination = target / path.relative_to(origin)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)
    elif origin.is_file() and wanted(origin):
        destination = target / origin.name if into_directory else target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, destination)
    else:
        raise FileNotFoundError(f"COPY source {origin} is missing or excluded by .dockerignore")


class DockerIgnore:
    """.dockerignore rules: the last matching pattern wins, ``!`` re-includes, and a
    pattern that matches a directory matches everything below it."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            self.rules.append((negate, re.compile(_to_regex(pattern))))

    def excludes(self, path: str) -> bool:
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        excluded = False
        for negate, regex in self.rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                excluded = not negate
        return excluded


def _to_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i:end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
