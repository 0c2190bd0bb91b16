"""The nemesis: seeded random faults against the cluster under test.

Every round it waits a random gap, picks a fault kind and a target (a
partition leader, a follower or the controller, as the cluster reports them
then), injects the fault, holds it for a random time and heals it; with
probability `overlap` it leaves the fault in place during the next one (at
most two at once). Each
injection and heal is a history event, so the checker can tell which fault
an outage followed. The seed fixes the sequence of kinds, roles, times and
draws; which broker holds a role depends on the run.

Kinds:

- `kill`: SIGKILL a broker, restart it on its data after the hold;
- `pause`: SIGSTOP a broker, SIGCONT after the hold;
- `peer-cut`: cut a partition leader's peer link (its followers cannot fetch);
- `peer-drop`: drop the answers on a leader's peer link (fetches arrive,
  their answers are lost);
- `etcd-cut`: cut a broker's link to etcd (its lease runs out);
- `etcd-restart`: SIGKILL etcd, start it again on its data after the hold;
- `client-cut`: cut a leader's client link (clients cannot reach it);
- `delay`: delay one broker's client or peer link both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from comet.aio import CometClient
from comet.errors import CometError
from tests.faults.cluster import FaultCluster
from tests.faults.history import History
from tests.faults.proxy import DOWN, UP

KINDS = (
    "kill",
    "pause",
    "peer-cut",
    "peer-drop",
    "etcd-cut",
    "etcd-restart",
    "client-cut",
    "delay",
)
ROLES = ("leader", "follower", "controller")
HEAL_ORDER = (
    "etcd-restart",
    "etcd-cut",
    "peer-cut",
    "peer-drop",
    "client-cut",
    "delay",
    "pause",
    "kill",
)
HEAL_ATTEMPTS = 3


@dataclass(frozen=True)
class NemesisConfig:
    """How often faults come and how long they last (seconds)."""

    kinds: Sequence[str] = KINDS
    gap_s: tuple[float, float] = (1.0, 4.0)
    hold_s: tuple[float, float] = (1.5, 7.0)
    delay_s: tuple[float, float] = (0.05, 0.4)
    # chance that a fault is left in place while the next one comes (at most two at once)
    overlap: float = 0.25


@dataclass(frozen=True)
class Plan:
    """A fault chosen but not yet injected: its target, and how to inject and heal it."""

    target: str
    detail: dict[str, Any]
    inject: Callable[[], Awaitable[None]]
    heal: Callable[[], Awaitable[None]]


def _now(action: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """An instant action as the coroutine function a Plan holds."""

    async def run() -> None:
        action()

    return run


@dataclass
class ActiveFault:
    """An injected fault and how to heal it."""

    id: int
    kind: str
    target: str
    detail: dict[str, Any]
    heal: Callable[[], Awaitable[None]]
    healed: bool = field(default=False)


class Nemesis:
    """Injects and heals faults; see the module docstring."""

    def __init__(
        self,
        cluster: FaultCluster,
        history: History,
        seed: int,
        topic: str,
        config: NemesisConfig | None = None,
    ) -> None:
        self.cluster = cluster
        self.history = history
        self.rng = random.Random(seed)
        self.topic = topic
        self.config = config or NemesisConfig()
        unknown = set(self.config.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"kinds: unknown {sorted(unknown)}; known: {', '.join(KINDS)}")
        self._active: list[ActiveFault] = []
        self._next_id = 0
        self._admin = CometClient(cluster.direct_bootstrap, timeout=2)

    async def run(self, duration_s: float) -> None:
        """Inject faults until `duration_s` has passed; all of them are healed by then."""
        deadline = time.monotonic() + duration_s
        rng = self.rng
        while True:
            gap = rng.uniform(*self.config.gap_s)
            kind = self._pick(self.config.kinds)
            hold = rng.uniform(*self.config.hold_s)
            keep = rng.random() < self.config.overlap
            if time.monotonic() + gap + hold > deadline:
                break
            await asyncio.sleep(gap)  # by design: quiet time between faults
            await self._inject(kind)
            await asyncio.sleep(hold)  # by design: how long the fault lasts
            if not keep or len(self._active) > 1:
                await self.heal_current()

    async def close(self) -> None:
        """Heal what is still active and release connections."""
        await self.heal_current()
        await self._admin.close()

    async def heal_current(self) -> None:
        """Heal the active faults: etcd first, then links, paused and dead brokers last.

        That order lets a restarted broker reach etcd. Each heal is retried, so a
        slow restart does not leave a fault behind.
        """
        active, self._active = self._active, []
        for fault in sorted(active, key=lambda f: HEAL_ORDER.index(f.kind)):
            if fault.healed:
                continue
            error = ""
            for _ in range(HEAL_ATTEMPTS):
                try:
                    await fault.heal()
                except Exception as exc:  # a restart that failed: try again
                    error = f"{type(exc).__name__}: {exc}"
                    continue
                fault.healed = True
                break
            self.history.record("heal", id=fault.id, kind=fault.kind, ok=fault.healed, error=error)

    # --- choosing targets -------------------------------------------------------

    async def _roles(self) -> tuple[dict[str, list[str]], str]:
        """(role -> candidate broker ids, controller id) from a running broker's metadata."""
        brokers = list(self.cluster.brokers)
        draw = self.rng.random()  # drawn whatever the metadata says: the sequence stays seeded
        try:
            meta = await self._admin.metadata([self.topic])
        except CometError:
            return {role: brokers for role in ROLES}, ""
        partitions = meta.topics.get(self.topic, ())
        leaders = sorted({p.leader for p in partitions if p.leader})
        picked = partitions[int(draw * len(partitions))] if partitions else None
        followers = [b for b in picked.replicas if b != picked.leader] if picked is not None else []
        roles = {
            "leader": leaders or brokers,
            "follower": followers or brokers,
            "controller": [meta.controller_id] if meta.controller_id else brokers,
        }
        return roles, meta.controller_id

    async def _target(self, roles: Sequence[str] = ROLES) -> tuple[str, str]:
        """(broker id, role) drawn from the seeded sequence."""
        role = self._pick(roles)
        candidates, _ = await self._roles()
        pool = sorted(b for b in candidates[role] if b in self.cluster.brokers)
        return self._pick(pool or sorted(self.cluster.brokers)), role

    def _pick(self, items: Sequence[str]) -> str:
        """One of `items`, consuming exactly one draw whatever their number."""
        return items[int(self.rng.random() * len(items))]

    # --- faults -----------------------------------------------------------------

    async def _inject(self, kind: str) -> None:
        self._next_id += 1
        fault_id = self._next_id
        prepare = getattr(self, "_" + kind.replace("-", "_"))
        plan: Plan = await prepare()
        # recorded before it takes effect, so no outage it causes precedes it
        self.history.record("fault", id=fault_id, kind=kind, target=plan.target, detail=plan.detail)
        self._active.append(ActiveFault(fault_id, kind, plan.target, plan.detail, plan.heal))
        await plan.inject()

    async def _kill(self) -> Plan:
        broker_id, role = await self._target()
        broker = self.cluster.brokers[broker_id]

        async def heal() -> None:
            if not broker.running:
                await self.cluster.restart(broker)

        return Plan(broker_id, {"role": role}, lambda: asyncio.to_thread(broker.kill), heal)

    async def _pause(self) -> Plan:
        broker_id, role = await self._target()
        broker = self.cluster.brokers[broker_id]

        async def heal() -> None:
            if broker.running:
                broker.resume()

        def inject() -> None:
            if broker.running:  # (a broker killed by an overlapping fault stays dead)
                broker.pause()

        return Plan(broker_id, {"role": role}, _now(inject), heal)

    async def _cut_link(self, link: str, roles: Sequence[str] = ROLES) -> Plan:
        broker_id, role = await self._target(roles)
        proxy = self.cluster.proxy(broker_id, link)
        return Plan(broker_id, {"role": role, "link": link}, _now(proxy.cut), _now(proxy.heal))

    async def _peer_cut(self) -> Plan:
        return await self._cut_link("peer", ("leader",))

    async def _client_cut(self) -> Plan:
        return await self._cut_link("client", ("leader",))

    async def _etcd_cut(self) -> Plan:
        return await self._cut_link("etcd")

    async def _peer_drop(self) -> Plan:
        broker_id, role = await self._target(("leader",))
        proxy = self.cluster.proxy(broker_id, "peer")
        detail = {"role": role, "link": "peer", "direction": DOWN}
        return Plan(
            broker_id, detail, _now(lambda: proxy.set_fault(DOWN, "drop")), _now(proxy.heal)
        )

    async def _delay(self) -> Plan:
        broker_id, role = await self._target()
        link = self._pick(("client", "peer"))
        delay = round(self.rng.uniform(*self.config.delay_s), 3)
        proxy = self.cluster.proxy(broker_id, link)

        def inject() -> None:
            proxy.set_fault(UP, "delay", delay)
            proxy.set_fault(DOWN, "delay", delay)

        detail = {"role": role, "link": link, "delay_s": delay}
        return Plan(broker_id, detail, _now(inject), _now(proxy.heal))

    async def _etcd_restart(self) -> Plan:
        etcd = self.cluster.etcd

        async def heal() -> None:
            if not etcd.running:
                await asyncio.to_thread(etcd.start, 30.0)

        return Plan("etcd", {}, lambda: asyncio.to_thread(etcd.kill), heal)

    async def heal_everything(self) -> list[str]:
        """Make sure nothing is left broken: proxies, etcd, paused and dead brokers.

        Returns what had to be repaired beyond the active fault (should be nothing).
        """
        await self.heal_current()
        repaired = []
        for name, proxy in self.cluster.proxies.proxies.items():
            if not proxy.healthy:
                repaired.append(f"proxy {name}")
            proxy.heal()
        if not self.cluster.etcd.running:
            repaired.append("etcd")
            await asyncio.to_thread(self.cluster.etcd.start, 30.0)
        for broker_id, broker in self.cluster.brokers.items():
            if broker.running:
                with contextlib.suppress(ProcessLookupError):
                    broker.resume()
            else:
                repaired.append(f"broker {broker_id}")
                await self.cluster.restart(broker)
        return repaired
