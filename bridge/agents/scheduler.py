"""Runs tasks: due ones by priority, each dialed through `CallService.originate`, its call's end
settling it (completed, retried later, or failed).

The store is the queue: a task is claimed (in_progress, one more attempt) in the store before it is
dialed, so a crash between the two is seen at the next start and counted as an attempt. Task calls
are bounded per company and overall (a share of `[server] max_calls`), so inbound calls always find
room. The API's task operations live here too, so the rules about a task's state sit in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Mapping
from functools import partial

from bridge.agents.task_store import TaskStore
from bridge.agents.tasks import (
    FINISHED,
    Attempt,
    Task,
    after_attempt,
    call_attempt,
    refusal_attempt,
)
from bridge.agents.templating import call_facts
from bridge.errors import BridgeError, Conflict, NotFound
from bridge.logging import get_logger
from bridge.session.calls import CallService, OutboundCall
from bridge.session.session import Session
from bridge.settings import TaskSettings
from bridge.store.lost import NODE_LOST
from bridge.store.records import TERMINAL_STATUSES as FINISHED_CALLS

RESTARTED = Attempt(completed=False, reason="failed", error="bridge_restarted", retryable=True)
# A fleet: how long a task may sit in progress with a finished call (or no call at all) before another
# node settles it from the store; the node that dialed it settles it well before, unless it is gone.
FLEET_SETTLE_GRACE_SECONDS = 10.0
FLEET_UNDIALED_SECONDS = 60.0  # claimed and never dialed: its node died between the two
FLEET_SWEEP_SECONDS = 5.0


class TaskScheduler:
    def __init__(
        self,
        store: TaskStore,
        calls: CallService,
        settings: TaskSettings,
        max_calls: int,
        *,
        fleet: bool = False,
    ) -> None:
        self._store = store
        # A fleet shares the queue: tasks in progress at start may be other live nodes' (see _sweep).
        self._fleet = fleet
        self._swept_at = 0.0
        self._calls = calls
        self._poll_seconds = settings.poll_seconds
        self._per_company = settings.max_concurrent_per_company
        # At least one, so a tiny server still runs tasks; otherwise the share of max_calls, rounded down.
        self._overall = max(1, int(max_calls * settings.max_share_of_calls))
        self._running: dict[str, str] = {}  # task id -> company id: dials claimed and not yet settled
        self._starting = asyncio.Lock()  # the bounds are checked and a slot taken as one step
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self._closed = False
        self._log = get_logger("tasks")

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve what a previous process left in progress (its call is gone), then run the queue."""
        if not self._fleet:
            for task in await self._store.in_progress():
                await self._settle(task, RESTARTED)
        self._loop_task = asyncio.create_task(self._run(), name="task-scheduler")

    async def close(self) -> None:
        """Stop dialing; a task whose call is still up stays in progress (resolved at the next start)."""
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except BridgeError as exc:  # e.g. the store closing under us: try again next round
                self._log.warning("task_poll_failed", error=str(exc), code=exc.code)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wake.wait()
            self._wake.clear()

    def _room(self, company_id: str) -> bool:
        if len(self._running) >= self._overall:
            return False
        return sum(1 for owner in self._running.values() if owner == company_id) < self._per_company

    async def _sweep(self) -> None:
        """A fleet's tasks in progress that no live node will settle: their call is over (it ran on
        another node, or its node was lost and the call failed node_lost) or they were never dialed.
        Settled from the store; the settle is conditional on `in_progress`, so two nodes settle once."""
        now = time.time()
        for task in await self._store.in_progress():
            if task.id in self._running:
                continue
            if not task.last_call_id:
                if now - task.updated_at > FLEET_UNDIALED_SECONDS:
                    await self._settle(task, RESTARTED)
                continue
            record = await self._calls.store.get(task.company_id, task.last_call_id)
            ended_at = record.ended_at if record is not None else None
            if record is None or ended_at is None or record.status not in FINISHED_CALLS:
                continue
            if now - ended_at > FLEET_SETTLE_GRACE_SECONDS:
                attempt = call_attempt(record.dial_outcome, record.status, record.error_code)
                if record.error_code == NODE_LOST:  # the bridge's loss, not the callee's: retried
                    attempt = dataclasses.replace(attempt, retryable=True)
                await self._settle(task, attempt, record.call_id)

    async def _tick(self) -> None:
        if self._fleet and time.monotonic() - self._swept_at > FLEET_SWEEP_SECONDS:
            self._swept_at = time.monotonic()
            await self._sweep()
        if len(self._running) >= self._overall:
            return
        # More than the free slots: some due tasks may belong to companies already at their bound.
        due = await self._store.due(time.time(), limit=self._overall * 4)
        for task in due:
            if self._closed or len(self._running) >= self._overall:
                return
            async with self._starting:
                if self._room(task.company_id):
                    await self._claim_and_dial(task.id)

    # -- one attempt ------------------------------------------------------------------------

    async def _claim_and_dial(self, task_id: str, *, due: bool = True) -> Task | None:
        claimed = await self._store.claim(task_id, time.time(), due=due)
        if claimed is None:  # edited, deleted, or taken by another scheduler meanwhile
            return None
        self._running[claimed.id] = claimed.company_id
        await self._dial(claimed)
        return claimed

    async def _dial(self, task: Task) -> None:
        company = self._calls.admission.directory().companies.get(task.company_id)
        if company is None or not company.owns_phone(task.from_number):
            await self._settle(task, refusal_attempt("from_not_allowed", 403))
            return
        try:
            session = await self._calls.originate(
                OutboundCall(
                    company_id=task.company_id,
                    from_number=task.from_number,
                    to_number=task.to_number,
                    call_objective=task.call_objective,
                    first_message=task.starting_message,
                    variables=task.context_data,
                    agent_id=task.agent_id,
                    task_id=task.id,
                    webhook_url=task.webhook_url,
                    webhook_events=task.webhook_events,
                )
            )
        except BridgeError as exc:
            self._log.warning("task_dial_refused", task_id=task.id, code=exc.code, attempt=task.attempts)
            await self._settle(task, refusal_attempt(exc.code, exc.status))
            return
        self._log.info("task_dialing", task_id=task.id, call_id=session.call_id, attempt=task.attempts)
        if session.state.is_terminal:
            self._ended(task, session)
        else:
            session.on_end(partial(self._ended, task))
        await self._store.dialed(task.id, session.call_id, time.time())

    def _ended(self, task: Task, session: Session) -> None:
        if self._closed:  # shutting down: the task stays in progress and the next start resolves it
            return
        if session.handed_off:  # its media went to another node of the fleet: the sweep settles it
            self._running.pop(task.id, None)
            return
        attempt = call_attempt(session.dial_outcome, session.state.value, session.error_code)
        settling = asyncio.ensure_future(self._settle(task, attempt, session.call_id))
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)

    async def _settle(self, task: Task, attempt: Attempt, call_id: str | None = None) -> None:
        now = time.time()
        after = after_attempt(task, attempt, now)
        try:
            await self._store.settle(task.id, after.status, after.scheduled_at, after.last_error, now)
        except BridgeError as exc:
            self._log.warning("task_settle_failed", task_id=task.id, error=str(exc))
        finally:
            self._running.pop(task.id, None)
            self._wake.set()  # a slot is free (and a retry may be due)
        self._log.info(
            "task_attempt_over",
            task_id=task.id,
            call_id=call_id,
            attempt=task.attempts,
            status=after.status,
            error=after.last_error,
        )

    # -- the API's operations ---------------------------------------------------------------

    def check(self, task: Task) -> None:
        """What the dial would refuse, refused now: a disabled agent (409 agent_disabled) or a
        placeholder nothing fills (400 unknown_placeholder). An agent that does not exist (yet) is
        left to the dial, which fails the task with unknown_agent if it still does not; everything is
        checked again then, as the agent may change meanwhile."""
        company = self._calls.admission.directory().companies.get(task.company_id)
        facts = call_facts(
            call_id=task.id,
            caller=task.from_number,
            called=task.to_number,
            direction="outbound",
            caller_name="",
            company=(company.settings.name or company.id) if company is not None else task.company_id,
        )
        try:
            self._calls.agents.check_call(
                task.company_id,
                task.agent_id,
                task.context_data,
                facts,
                task.call_objective,
                task.starting_message,
            )
        except NotFound as exc:
            if exc.code != "unknown_agent":
                raise

    async def create(self, task: Task) -> Task:
        self.check(task)
        await self._store.insert(task)
        self._wake.set()
        return task

    async def get(self, company_id: str, task_id: str) -> Task:
        task = await self._store.get(company_id, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}", code="unknown_task")
        return task

    async def page(
        self, company_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[list[Task], int]:
        return await self._store.page(company_id, status, limit, offset)

    async def edit(self, company_id: str, task_id: str, changes: Mapping[str, object]) -> Task:
        task = await self.get(company_id, task_id)
        if task.status == "pending":
            texts = ("agent_id", "to_number", "from_number", "starting_message", "call_objective")
            merged = {name: changes[name] for name in (*texts, "context_data") if name in changes}
            self.check(dataclasses.replace(task, **merged))  # type: ignore[arg-type]
        if task.status != "pending" or not await self._store.edit(company_id, task_id, changes, time.time()):
            await self.get(company_id, task_id)  # 404 if it was deleted meanwhile
            raise Conflict(f"task {task_id} is no longer pending", code="task_not_pending")
        self._wake.set()
        return await self.get(company_id, task_id)

    async def delete(self, company_id: str, task_id: str) -> None:
        task = await self.get(company_id, task_id)
        if task.status == "in_progress" or not await self._store.delete(company_id, task_id):
            await self.get(company_id, task_id)
            raise Conflict(f"task {task_id} is calling now", code="task_in_progress")

    async def execute(self, company_id: str, task_id: str) -> Task:
        """Dial now whatever its scheduled_at; when the bounds are full, it is due now and runs first
        among tasks of its priority as soon as a slot frees."""
        task = await self.get(company_id, task_id)
        if task.status != "pending":
            raise Conflict(f"task {task_id} is {task.status}, not pending", code="task_not_pending")
        async with self._starting:
            if self._room(company_id) and not self._closed:
                claimed = await self._claim_and_dial(task_id, due=False)
                if claimed is not None:
                    return await self.get(company_id, task_id)
        if not await self._store.edit(company_id, task_id, {"scheduled_at": time.time()}, time.time()):
            await self.get(company_id, task_id)
            raise Conflict(f"task {task_id} is no longer pending", code="task_not_pending")
        self._wake.set()
        return await self.get(company_id, task_id)

    async def reset(self, company_id: str, task_id: str) -> Task:
        task = await self.get(company_id, task_id)
        if task.status not in FINISHED or not await self._store.reset(company_id, task_id, time.time()):
            await self.get(company_id, task_id)
            raise Conflict(
                f"task {task_id} is {task.status}: only a completed or failed task is reset",
                code="task_not_finished",
            )
        self._wake.set()
        return await self.get(company_id, task_id)
