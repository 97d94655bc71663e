# Ctrl-C ends the process at once, the Unix way, from the first moment:
# importing the CLI takes a while and a KeyboardInterrupt there would be a
# traceback. entry() sets the same again (the console script starts there),
# and cli.main() still answers a KeyboardInterrupt raised some other way
# with exit status 130.
import signal

signal.signal(signal.SIGINT, signal.SIG_DFL)

from .cli import entry  # noqa: E402  (after the signal disposition)

entry()
