"""Run the submission even when it imports a package the grading environment lacks.

Students import plotting, progress-bar or logging packages (pandas, tqdm, seaborn, einops, wandb,
torch.utils.tensorboard) or a helper module of their own, at the top of backbone.py or inside a
function. Those imports should not cost points when the graded code does not need the package.
So the submission's module gets builtins of its own whose `__import__` hands the student's code
a permissive Stub where the real import finds no such module. The stub is never put in
sys.modules: library code keeps its own imports, and torch's checks such as
importlib.util.find_spec("pandas") still see the package as missing, as it is. A stub stored in
sys.modules made torch raise "pandas.__spec__ is None" inside the student's train_epoch.
"""

import builtins
import types

# A missing module under one of these is a real error of the submission (a typo such as
# torch.nn.functionnal), never stubbed: they are installed wherever the course runs the code.
NEVER_STUBBED = ("torch", "numpy", "generate_data")


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


def describe(statement: str, missing: str) -> str:
    """The note a stubbed import gets, for the student."""
    return (f"`{statement}` failed in the grading environment (no module `{missing}` here): "
            "it was replaced by a stub that does nothing (fine as long as the graded code does "
            "not use it)")


def student_builtins(on_stub) -> dict:
    """A copy of the builtins for the submission's module globals, whose `__import__` returns a
    Stub where the real import raises for want of a module outside NEVER_STUBBED, and then calls
    on_stub(the import statement, the missing module). Relative imports are never stubbed."""
    real_import = builtins.__import__

    def import_or_stub(name, globals=None, locals=None, fromlist=(), level=0):
        try:
            return real_import(name, globals, locals, fromlist, level)
        except ImportError as error:
            missing = _missing_module(error)
            if level or missing is None or missing.split(".")[0] in NEVER_STUBBED:
                raise
            on_stub(f"from {name} import {', '.join(fromlist)}" if fromlist else f"import {name}",
                    missing)
            if fromlist or "." not in name:
                return Stub(name)
            # `import a.b.c` binds `a`: the real one when it exists (a missing torch.utils
            # submodule must not replace torch), else a stub.
            top = name.split(".")[0]
            try:
                return real_import(top, globals, locals, (), 0)
            except ImportError:
                return Stub(top)

    namespace = dict(vars(builtins))
    namespace["__import__"] = import_or_stub
    return namespace


def _missing_module(error: BaseException):
    """The name of the module whose absence caused `error` (a ModuleNotFoundError, or an
    ImportError a library raised while handling one), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ModuleNotFoundError) and error.name:
            return error.name
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
