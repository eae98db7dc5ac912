"""Build configuration that pyproject.toml cannot express: ship migrations/ inside the package.

The Alembic scripts stay at the top of the repository (where `alembic` and reviewers expect
them) and are installed as the subpackage `worker._migrations`, so a wheel carries them and
`worker.migrate` finds them with importlib.resources, wherever the package is installed
(README, "Install from the wheel"). Everything else is declared in pyproject.toml.
"""

from __future__ import annotations

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["worker", "worker.*"]),
        "worker._migrations",
        "worker._migrations.versions",
    ],
    package_dir={"worker._migrations": "migrations"},
)
