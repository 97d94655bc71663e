"""The one exception type the CLI turns into a one-line message (exit 2)."""


class KhoError(Exception):
    """Bad input or an unusable source. The message says what and where."""


class MemoryFault(KhoError):
    """A physical range could not be read from the memory source."""

    def __init__(self, phys: int, size: int, what: str, why: str = "",
                 message: str | None = None):
        self.phys, self.size, self.what = phys, size, what
        super().__init__(message or
                         f"cannot read {what} at phys 0x{phys:x} "
                         f"(+0x{size:x}): {why or 'not in the memory source'}")
