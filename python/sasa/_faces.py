"""How a package's ``__init__`` shows its public names: loaded on first use, and callable modules.

Every subpackage's ``__init__.py`` is its public face: it names what the package offers and where
each name lives, and imports nothing heavy itself (:func:`lazy_exports`), so ``import sasa`` and
the ``sasa`` command's ``--help`` stay light; a name's module loads on its first use.

Some packages share their name with their main function: ``sasa.calibrate``, ``sasa.locate``,
``sasa.evaluate``. ``from sasa import calibrate`` must give something to call whether or not the
package ``sasa.calibrate`` was imported first (importing a subpackage binds its name on the parent,
which would otherwise shadow the function). So these packages are made callable
(:func:`make_callable`): calling the package calls its main function, and
``from sasa.calibrate import calibrate`` still gives the function itself.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable, Iterable, Mapping

#: Third-party packages of the ``hf`` extra: a name that needs one that is missing says so.
HF_EXTRA = ("transformers", "safetensors", "tqdm", "PIL", "tokenizers")


def lazy_exports(
    package: str, exports: Mapping[str, str], modules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for package ``package`` (PEP 562): ``exports`` maps each public name
    to the submodule, relative to ``package``, that defines it; each name in ``modules`` is a
    subpackage given as itself. A value is cached on the package on first use."""
    subpackages = tuple(modules)
    names = sorted(list(exports) + list(subpackages))

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None and name not in subpackages:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            loaded = importlib.import_module(f"{package}.{module or name}")
            value = loaded if module is None else getattr(loaded, name)
        except ModuleNotFoundError as err:
            if err.name and err.name.split(".")[0] in HF_EXTRA:
                raise ModuleNotFoundError(
                    f"{package}.{name} needs {err.name}, which is not installed: pip install 'sasa-kernels[hf]'",
                    name=err.name,
                ) from err
            raise
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return list(names)

    return __getattr__, __dir__


class _CallableModule(types.ModuleType):
    _main_function = ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self._main_function)(*args, **kwargs)


def make_callable(module_name: str, function_name: str) -> None:
    """Calling module ``module_name`` calls its attribute ``function_name``."""
    module = sys.modules[module_name]
    cls = type(f"Callable_{function_name}", (_CallableModule,), {"_main_function": function_name})
    module.__class__ = cls
