"""Modules that share their name with their main function: ``sasa.calibrate``, ``sasa.locate``,
``sasa.evaluate``.

``from sasa import calibrate`` must give something to call whether or not the submodule
``sasa.calibrate`` was imported first (importing a submodule binds its name on the package, which
would otherwise shadow the function). So these modules are made callable: calling the module calls
its main function, and ``from sasa.calibrate import calibrate`` still gives the function itself.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    _main_function = ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self._main_function)(*args, **kwargs)


def make_callable(module_name: str, function_name: str) -> None:
    """Calling module ``module_name`` calls its attribute ``function_name``."""
    module = sys.modules[module_name]
    cls = type(f"Callable_{function_name}", (_CallableModule,), {"_main_function": function_name})
    module.__class__ = cls
