"""Import the submission even when it imports a package the grading environment lacks.

Students import plotting, progress-bar or logging packages (or a helper module of their own) at the
top of backbone.py. Those imports should not zero a submission whose graded code never uses them,
so a missing module is replaced by a permissive stub and the import retried; the grader says so.
"""

import importlib
import sys
import types

MAX_STUBS = 10


class Stub(types.ModuleType):
    """Stands in for any module, attribute or call result. Wrapping calls such as
    `tqdm(loader)` or a decorator return their first argument, so loops and decorated code run."""

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return Stub(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return args[0] if args else Stub(f"{self.__name__}()")

    def __iter__(self):
        return iter(())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __mro_entries__(self, bases):
        return (object,)


def import_with_stubs(name: str):
    """Import module `name`, stubbing missing third-party modules; returns (module, stubbed names)."""
    stubbed = []
    while True:
        try:
            return importlib.import_module(name), stubbed
        except ModuleNotFoundError as error:
            missing = error.name
            if not missing or missing == name or missing in stubbed or len(stubbed) >= MAX_STUBS:
                raise
            top = missing.split(".")[0]
            if top in ("torch", "numpy", "generate_data"):
                raise
            sys.modules.pop(name, None)
            for part in _parents(missing):
                sys.modules.setdefault(part, Stub(part))
            stubbed.append(missing)


def _parents(dotted: str):
    parts = dotted.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]
