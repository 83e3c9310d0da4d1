"""Server diagnostics: `kill -USR1 <server pid>` writes every thread's stack to the
server's stderr (faulthandler), so a session that waits forever shows what it waits on
(the four-session browser test reads it when a page never gets its number)."""
import faulthandler
import signal
import sys

if hasattr(signal, "SIGUSR1"):
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
