"""The real-process durability tests, on MariaDB too: the same test functions as for
SQLite and PostgreSQL, collected here with ``backend_spec`` naming the MariaDB server.

Chosen for what MariaDB does differently (row locks instead of ``ON CONFLICT`` and
``UPDATE ... RETURNING``; ``GET_LOCK`` session liveness): kill -9 at every step then an
immediate resume, SIGKILLs at random moments, racing resumers and racing kickoffs of one
new id, processes hammering one run, and a SIGSTOPped owner thawed after a takeover.
"""

from __future__ import annotations

import pytest
from test_attack_kills import test_random_sigkills_never_lose_or_repeat_a_committed_lap  # noqa: F401
from test_attack_races import (  # noqa: F401  (collected again, on MariaDB)
    test_racing_kickoffs_of_one_new_id_run_each_lap_once_per_kickoff,
)
from test_attack_stale_owner import (  # noqa: F401
    test_thawed_owner_does_not_release_the_new_owners_lease,
)
from test_crash_resume import (  # noqa: F401
    test_kill_at_every_step_then_resume,
    test_kill_then_immediate_resume_takes_the_dead_owners_lease,
)
from test_fork_and_writers import test_processes_hammering_one_run_lose_no_update  # noqa: F401
from test_racing_resumers import (  # noqa: F401
    test_racing_resumers_never_execute_a_committed_step_twice,
)
from test_takeover import test_sigstopped_owner_thawed_after_takeover_never_appends  # noqa: F401

pytestmark = pytest.mark.mysql


@pytest.fixture
def backend_spec(mysql_spec: str) -> str:
    return mysql_spec


@pytest.fixture
def spec(mysql_spec: str) -> str:
    """The backend of test_attack_kills' tests (it names it ``spec``)."""
    return mysql_spec
