"""Reading the Dockerfile and .dockerignore without a Docker engine.

Enough of the Dockerfile language for the image checks: stages (one may start FROM an
earlier one and inherit its files, ENV, WORKDIR, USER and ENTRYPOINT/CMD), ARG/ENV
substitution, and COPY replayed into a directory per stage (RUN steps cannot run here; they
only install dependencies, which the test virtualenv provides).
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

    def parent(self, stage: Stage) -> Stage | None:
        """The earlier stage ``stage`` starts FROM, or None for an image."""
        earlier = self.stages[:self.stages.index(stage)]
        return next((s for s in earlier if s.name == stage.base), None)

    def lineage(self, stage: Stage) -> list[Stage]:
        """``stage`` and the stages it starts from, the first one first."""
        chain = [stage]
        while (parent := self.parent(chain[0])) is not None:
            chain.insert(0, parent)
        return chain

    def base_image(self, stage: Stage) -> str:
        return self.lineage(stage)[0].base

    def instructions(self, stage: Stage, keyword: str) -> list[str]:
        """Every ``keyword`` instruction ``stage`` runs or inherits, in order."""
        return [args for s in self.lineage(stage) for args in s.all(keyword)]

    def sources(self, stage: Stage) -> set[str]:
        """Names of every stage whose files or layers end up in ``stage``: those it starts
        from and those it copies from (COPY --from), transitively."""
        found: set[str] = set()
        pending = [stage]
        while pending:
            current = pending.pop()
            if current.name in found:
                continue
            found.add(current.name)
            if (parent := self.parent(current)) is not None:
                pending.append(parent)
            for copy in current.all("COPY"):
                pending += [self.stage(word.split("=", 1)[1]) for word in shlex.split(copy)
                            if word.startswith("--from=")]
        return found

    def _scan(self, stage: Stage) -> list[tuple[str, str, dict[str, str]]]:
        """Each instruction of ``stage``'s lineage with the variables in effect after it:
        ENV carries over into a stage started FROM another, ARG stays in its stage."""
        env: dict[str, str] = {}
        scanned = []
        for current in self.lineage(stage):
            args: dict[str, str] = {}
            for keyword, text in current.instructions:
                if keyword == "ARG":
                    key, _, default = text.partition("=")
                    args.setdefault(key, substitute(default, {**args, **env}))
                elif keyword == "ENV":
                    for pair in shlex.split(text):
                        key, _, value = pair.partition("=")
                        env[key] = substitute(value, {**args, **env})
                scanned.append((keyword, text, {**args, **env}))
        return scanned

    def environment(self, stage: Stage) -> dict[str, str]:
        """ARG defaults and ENV values in effect at the end of ``stage``."""
        scanned = self._scan(stage)
        return dict(scanned[-1][2]) if scanned else {}

    def resolved(self, stage: Stage, keyword: str) -> str:
        """The last ``keyword`` instruction of ``stage`` (or inherited) with its variables
        substituted."""
        result = ""
        for key, text, values in self._scan(stage):
            if key == keyword:
                result = substitute(text, values)
        return result

    def exec_form(self, stage: Stage, keyword: str) -> list[str]:
        """ENTRYPOINT / CMD in JSON (exec) form; shell form would break signal handling."""
        [args] = self.instructions(stage, keyword)[-1:]
        value = json.loads(args)
        assert isinstance(value, list), f"{keyword} must use the exec (JSON array) form"
        return value

    def replay_copies(self, context: Path, ignore: DockerIgnore, root: Path
                      ) -> tuple[dict[str, Path], dict[str, list[str]]]:
        """Replay every COPY into ``root/<stage>`` (a stage started FROM another one starts
        with a copy of its files).

        Returns each stage's filesystem root, and per stage the ``--from`` sources it holds
        (copied itself or inherited) that only RUN steps create (such as the virtualenv),
        which cannot be replayed here.
        """
        filesystems: dict[str, Path] = {}
        workdirs: dict[str, PurePosixPath] = {}
        made_by_run: dict[str, list[str]] = {}
        for stage in self.stages:
            fs = filesystems[stage.name] = root / stage.name
            parent = self.parent(stage)
            if parent is None:
                fs.mkdir(parents=True)
                workdir, from_run = PurePosixPath("/"), []
            else:
                shutil.copytree(filesystems[parent.name], fs, symlinks=True)
                workdir, from_run = workdirs[parent.name], list(made_by_run[parent.name])
            values: dict[str, str] = {}
            for keyword, args in stage.instructions:
                _declare(values, keyword, args)
                if keyword == "WORKDIR":
                    workdir = workdir / substitute(args, values)
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
                                from_run.append(source)
                                continue
                        copy_path(origin, target, dest.endswith("/") or len(sources) > 1,
                                  context if source_stage is None else None, allowed)
            workdirs[stage.name], made_by_run[stage.name] = workdir, from_run
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
