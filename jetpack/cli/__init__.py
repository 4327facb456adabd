"""The ``jetpack`` command line (click).

``main`` holds the group, the global options and the one wrapper that maps errors to exit
codes; ``options`` the state and options shared by every command; one module per noun
(``aci``) holds its commands. Commands parse, call the library, and print — no logic of
their own, and heavy imports only inside the command that needs them.
"""
