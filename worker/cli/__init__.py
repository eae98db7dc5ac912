"""The `cardshare` command: `main` builds the group from one module per command group, each of
which imports only `common` and the packages that do the work. `cardshare health` lives in
`worker.ops.healthcheck`, so that a healthcheck never loads this package.
"""
