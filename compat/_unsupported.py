"""One-line errors for the parts of bert4keras that `compat` leaves out.

Each compat module lists the bert4keras names it does not provide, with the
Keras 3 (or toolkit) way to do the same thing. Looking one up raises
`UnsupportedError` naming that way, at the line of the script that asked,
instead of an `AttributeError` somewhere deeper. It subclasses
`NotImplementedError`, not `AttributeError`, so that
`from compat.x import Name` shows the message instead of Python's generic
"cannot import name".
"""

PORTING = "see docs/porting.md"


class UnsupportedError(NotImplementedError):
    """A bert4keras feature compat does not provide; says what to use."""


def unsupported(name: str, hint: str) -> UnsupportedError:
    return UnsupportedError(f"{name} is not supported on Keras 3: {hint}")


def module_getattr(module: str, table: dict[str, str], fallback=None):
    """A module `__getattr__`: bert4keras names in `table` raise with their
    hint, other names are looked up on `fallback` (e.g. `keras.layers`,
    which bert4keras's modules re-export), anything else is missing."""

    def __getattr__(name):
        if name in table:
            raise unsupported(f"{module}.{name}", table[name])
        if fallback is not None and not name.startswith("_"):
            try:
                return getattr(fallback, name)
            except AttributeError:
                pass
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
