"""A self-hosted chat server for telnet, nc and a full-screen terminal client.

The package is split by what each module holds: ``protocol`` speaks the wire,
``service`` is the chat logic, ``events`` and ``render`` describe and encode what
happens, ``store`` persists it, ``transfer`` moves files, ``http`` serves them,
``config`` and ``cli`` start it all.
"""

__version__ = "0.1.0"
