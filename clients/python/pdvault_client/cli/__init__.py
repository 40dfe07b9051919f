"""`pdv`: run the pdvault server, and call it as the services that use it would.

One command, two distributions. This package ships in the client distribution
(`pdvault-client`, clients/python) with the `pdv` script, so that `pip install pdvault-client`
alone gives the client commands (tokenize, detokenize, keys, subject, document, retention);
they import nothing but `pdvault_client`. The server's commands (`serve`, `db upgrade`, `policy
check`) are parsed here too, so that `pdv --help` is the same everywhere, and run from
`vault.cli` in the server distribution (`pdvault`, which depends on this one): `server.py` loads
it by name when such a command runs, and says so when only the client is installed. An
import-linter contract keeps every other module of this package off `vault`.

Values are printed only by `detokenize` (and `subject export`), and only to standard output; a
document's content goes only where `document get -o` (or `subject export --with-documents`)
says. Errors go to standard error as one line, `STATUS: message`, with a hint where one helps. The
exit status says what kind of failure it was (`exits.EXIT_CODES`, also in `pdv --help` and the
README).

    entry.py        main: parse, run `args.run`, one line per failure
    parser.py       every command and flag, each command's `run` (argparse set_defaults)
    connection.py   the API key, the address and TLS; the client a client command gets
    tokens.py       tokenize, detokenize
    keys.py         keys status|rotate|rewrap|trim
    approvals.py    approval list|approve|reject (dual control)
    subjects.py     subject show|stop|resume|shred|export|consent|correct
    documents.py    document upload|show|get|list|delete|hold|verified|sweep; retention sweep
    report.py       errors and hints on standard error; JSON and one-line text output
    exits.py        the exit statuses
    environment.py  the environment, exit statuses and examples of `pdv --help`; --version
    server.py       the server's commands and settings, loaded from `vault` when installed
"""

from pdvault_client.cli.entry import main

__all__ = ["main"]
