"""`manage.py replicas stop`: stop every replica process this installation runs on the local target.

Local replicas run in sessions of their own, so they outlive the worker that started them; without this,
stopping Studio would leave them serving on loopback with nothing to route to them or stop them. `studio
up` runs it as it stops, once its worker has stopped, so no job starts a replica behind it.

What it guarantees: every local replica's process is gone when it returns (SIGTERM, then SIGKILL after the
target's grace period), and every replica that was ready is marked unhealthy in the same transaction that
bumps the route table, so a gateway stops routing to it and the reconciler starts it again once a worker
runs. Replicas in any other state keep it: a starting one belongs to the job or pass that started it, a
stopping one is on its way out, and a failed one keeps its back-off. Run by hand while a worker runs, the
reconciler restarts the replicas it stopped.
"""

from concurrent.futures import ThreadPoolExecutor

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from endpoints.choices import ReplicaStateChoices, TargetChoices
from endpoints.models import Replica, RouteTableVersion
from endpoints.targets.local import LocalTarget

# Replicas are stopped side by side: each may take the target's whole grace period to finish its requests.
MAX_PARALLEL_STOPS = 8


def stop_local_replicas() -> tuple[int, list[str]]:
    """Stop every local replica's process; returns how many ran, and what could not be stopped (and why)."""
    target = LocalTarget()
    local = Replica.objects.filter(deployment__target=TargetChoices.LOCAL)
    replicas = list(local.select_related("deployment"))
    # Before they stop: a gateway that still polls the route table stops sending them requests first.
    with transaction.atomic():
        marked = Replica.objects.filter(
            pk__in=[replica.pk for replica in replicas], state=ReplicaStateChoices.READY
        ).update(state=ReplicaStateChoices.UNHEALTHY)
        if marked:
            RouteTableVersion.bump()
    running = [replica for replica in replicas if replica.handle and target.alive(replica)]

    def stop(replica: Replica) -> str | None:
        try:
            target.stop(replica)
        except OSError as exc:
            return f"replica {replica.replica_id} (pid {replica.handle.get('pid')}): {exc}"
        return None

    if not running:
        return 0, []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_STOPS, len(running))) as pool:
        failures = [failure for failure in pool.map(stop, running) if failure]
    return len(running), failures


class Command(BaseCommand):
    help = (
        "stop: stop every replica this installation runs on the local target; ready ones are marked "
        "unhealthy, so Studio starts them again when its worker next runs."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["stop"], help="what to do with the local replicas")

    def handle(self, *args, action: str, **options):
        stopped, failures = stop_local_replicas()
        if failures:
            raise CommandError("Some local replicas could not be stopped:\n  " + "\n  ".join(failures))
        if stopped:
            noun = "replica" if stopped == 1 else "replicas"
            self.stdout.write(
                f"Stopped {stopped} local {noun}; those that were ready start again when Studio next runs."
            )
        else:
            self.stdout.write("No local replica was running.")
