"""Wires the layers into one MultiService: the only place that knows them all.

Start order (children start in the order added): store, push clients,
registrar timers, calls, then the SIP listeners last, so that nothing
arrives before the parts that answer it are up; stop runs in reverse.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
import os
import signal
import threading
from typing import Any, Callable, cast

from twisted.application import service
from twisted.internet import reactor as default_reactor
from twisted.internet import defer, ssl, task
from twisted.logger import Logger

from b2bua.calls.caller_id import CallerIdPolicy, TrunkIdentity
from b2bua.calls.locate import SipLocator, make_resolver
from b2bua.clock import Clock
from b2bua.calls.context import CallServices, CallSettings, TrunkCredentials
from b2bua.calls.early_media import MediaSettings
from b2bua.calls.table import CallTable
from b2bua.config import Config
from b2bua.logs import apply_log_settings
from b2bua.media.g711 import PCMA, PCMU
from b2bua.media.ng import NgClient, parse_endpoint
from b2bua.media.ports import PortAllocator
from b2bua.media.rtpengine import NgClientService
from b2bua.media.tone import encoded_cadence
from b2bua.messaging import Mailbox, MailboxLimits, MessageRelay
from b2bua.messaging.relay import TrunkUris
from b2bua.metrics import Metrics
from b2bua.config_schema import RouterEntry
from b2bua.core import SipCore
from b2bua.plugin_loader import PluginLoadError, load_chain
from b2bua.admin_push import build_notifiers
from b2bua.push.notifier import PushNotifierRegistry
from b2bua.push.outcome import PushConfigError
from b2bua.push.refresh import RefreshScheduler
from b2bua.registrar.contacts import PNSREG_INTERVAL
from b2bua.registrar.events import BindingEvents
from b2bua.registrar.registrar import Registrar
from b2bua.routing import RouterContext, TrunkInfo
from b2bua.sip.auth_throttle import FailureThrottle
from b2bua.sip.digest import DigestAuthenticator
from b2bua.sip.timers import Timers
from b2bua.sip.uri import parse_uri
from b2bua.sip.transaction_layer import TransactionLayer
from b2bua.store import Store, UserExists
from b2bua.store.cdrs import CdrWriter
from b2bua.store.user_policy import UserPolicyStore
from b2bua.store.writer import BindingWriter
from b2bua.trunk_register import TrunkRegistration
from b2bua.trunk_status import TrunkStatus
from b2bua.reload import ReloadParts, Reloader
from b2bua.transport.endpoint import SipEndpoint
from b2bua.transport.network import SipNetwork
from b2bua.web import web_service

log = Logger()


class ServiceBuildError(Exception):
    """A part of the service could not be built from a valid config (names the part)."""


@dataclass(frozen=True)
class ServiceParts:
    """The long-lived parts ``make_service`` builds, handed to the root service whole."""

    network: SipNetwork
    endpoint: SipEndpoint
    core: SipCore
    layer: TransactionLayer
    store: Store
    registrar: Registrar
    calls: CallTable
    bindings: BindingWriter
    cdrs: CdrWriter
    notifier: PushNotifierRegistry


class B2buaService(service.MultiService):
    """The root service; holds the parts so tests and the admin side can reach them.

    Stopping (SIGTERM) first drains: new INVITEs get 503 with Retry-After
    while calls in progress get up to ``[calls] drain_time`` to end, then the
    children stop in reverse order (listeners first, pending binding writes
    flushed last).  SIGHUP applies the config file again to new calls (b2bua.reload).
    """

    log = Logger()

    def __init__(self, config: Config, clock: Any, parts: ServiceParts, metrics: Metrics,
                 reload_routers: Callable[[], object] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted is untyped here
        self.config = config
        self.clock = clock
        self.started_at = 0.0
        self.network = parts.network
        self.endpoint = parts.endpoint
        self.core = parts.core
        self.layer = parts.layer
        self.store = parts.store
        self.registrar = parts.registrar
        self.calls = parts.calls
        self.bindings = parts.bindings
        self.cdrs = parts.cdrs
        self.notifier = parts.notifier
        self.metrics = metrics
        self.reload_routers = reload_routers   # b2bua.reload.Reloader.reload
        # Set by make_service once built (they need the root service themselves).
        self.mailbox: Mailbox | None = None
        self.refresh: RefreshScheduler | None = None
        self.push_clients: dict[str, Any] = {}   # H2PushClient by provider ("apns", "fcm")
        self.trunk_status: TrunkStatus | None = None
        self.cluster: Any = None   # b2bua.cluster.Cluster in cluster mode

    def startService(self) -> None:  # noqa: N802
        self.started_at = self.clock.seconds()
        apply_log_settings(self.config.log)
        # Start-up objects (modules, config, tone tables) never die: keep them out of every
        # collection, and collect less often, since full collections stall the event loop.
        gc.freeze()
        gc.set_threshold(10000, 20, 20)
        super().startService()  # type: ignore[no-untyped-call]
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, self._sighup)
        self.log.info("b2bua started: domain {domain}, config {path}",
                      domain=self.config.sip.domain, path=str(self.config.path))

    def _sighup(self, signum: int, frame: object) -> None:
        reactor = self.clock
        reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """Apply the config file again (users, trunks, routers, call and push settings; the
        whole file or nothing) and re-read bindings changed by ``b2bua-admin``."""
        if self.bindings is not None:
            self.bindings.reload().addErrback(
                lambda f: self.log.failure("re-reading bindings failed", f))
        if self.reload_routers is None:
            return
        self.reload_routers()   # b2bua.reload.Reloader: logs what it applied or refused

    def stopService(self) -> defer.Deferred[None]:  # noqa: N802
        d = self.drain(self.config.calls.drain_time)
        d.addCallback(lambda _: service.MultiService.stopService(self))  # type: ignore[no-untyped-call,call-overload]
        return d

    def drain(self, limit: float) -> defer.Deferred[None]:
        """Refuse new calls, then wait (at most ``limit`` s) for active calls to end."""
        if self.core is not None:
            self.core.accepting_calls = False
        done: defer.Deferred[None] = defer.Deferred()
        deadline = self.clock.seconds() + limit

        def check() -> None:
            active = len(self.calls.active_calls()) if self.calls is not None else 0
            if active == 0 or self.clock.seconds() >= deadline:
                if active:
                    self.log.warn("drain time over; {n} calls still up", n=active)
                done.callback(None)
            else:
                self.clock.callLater(0.1, check)

        active = len(self.calls.active_calls()) if self.calls is not None else 0
        if active:
            self.log.info("stopping: waiting for {n} calls to end (at most {limit} s)",
                          n=active, limit=limit)
        check()
        return done


def _server_tls_options(config: Config) -> object | None:
    if config.tls is None:
        return None
    try:
        cert = config.tls.certificate.read_bytes()
        key = config.tls.private_key.read_bytes()
        options: object = ssl.PrivateCertificate.loadPEM(  # type: ignore[no-untyped-call]
            cert + b"\n" + key).options()
        return options
    except Exception as exc:  # a bad PEM must name the key, not print a traceback
        raise ServiceBuildError(
            f"tls.certificate / tls.private_key: cannot load ({exc.__class__.__name__})") from None


def _sent_by(config: Config) -> dict[str, str]:
    """host:port per transport for the Via of requests we originate."""
    out: dict[str, str] = {}
    advertised = config.sip.advertised_address
    for listen in config.sip.listen:
        host = advertised or listen.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        ref = f"[{host}]" if ":" in host else host
        out.setdefault(listen.transport.upper(), f"{ref}:{listen.port}")
    return out


def make_service(config: Config, reactor: Any = default_reactor) -> B2buaService:
    """Build the whole service tree from a validated config."""
    clock: Clock = reactor
    metrics = Metrics()
    cluster = None
    if config.database.url:     # cluster mode: users, bindings, messages in Redis
        from b2bua.cluster import build_cluster
        cluster = build_cluster(config, reactor, ServiceBuildError)
        store: Any = cluster.store
        bindings: Any = cluster.writer
        events: Any = cluster.events
        _create_users(config, store)
    else:
        store = _open_store(config)
        _create_users(config, store)
        # flush_delay 0: commit on the next reactor turn (still one transaction for all the
        # REGISTERs of that turn); a woken phone's INVITE waits for this commit.
        bindings = BindingWriter(store.bindings, clock, flush_delay=0)
        events = BindingEvents()
    # One challenge per configured algorithm, in the configured order (RFC 8760 §2.4).
    # The default is MD5 alone: some clients (baresip 1.0) give up on a challenge whose
    # algorithm they lack instead of picking the one they know. 401 and 407 share it.
    auth = DigestAuthenticator(config.sip.realm, clock, os.urandom(32),
                               nonce_ttl=config.registrar.nonce_ttl,
                               algorithms=config.registrar.digest_algorithms)
    throttle = (FailureThrottle(clock, config.registrar.auth_failures_limit,
                                block_time=config.registrar.auth_block_time)
                if config.registrar.auth_failures_limit else None)
    registrar = Registrar(store.users, bindings, auth, throttle, events, clock,
                          config.sip.domain, config.registrar.min_expires,
                          config.registrar.max_expires, config.registrar.default_expires,
                          token_lifetime=config.push.token_lifetime,
                          enabled_push_providers=enabled_push_providers(config))

    network = SipNetwork(reactor, list(config.sip.listen),
                         tls_options=_server_tls_options(config),
                         client_tls_options=_client_tls_factory(config),
                         max_message_size=config.sip.max_message_size)
    timers = Timers(t1=config.sip.t1, t2=config.sip.t2, t4=config.sip.t4,
                    timer_c=config.calls.timer_c)
    sent_by = _sent_by(config)
    contact_for = _contact_factory(sent_by)
    layer = TransactionLayer(reactor, network.send, timers=timers, sent_by=sent_by)  # TU: below
    endpoint = SipEndpoint(network, on_message=layer.message_received,
                           server_header=config.sip.user_agent)
    network.sink = endpoint   # the network delivers to the endpoint, which sends through it

    def connection_lost(flow: Any) -> None:
        # A closed stream: bindings stop pointing at it, and requests waiting on it fail
        # now (503 to the TU, RFC 3261 §8.1.3.1) instead of at Timer B/F.
        registrar.forget_flow(flow)
        layer.transport_error_for(flow.peer, flow.transport_name)

    network.on_connection_lost = connection_lost

    locator = SipLocator(make_resolver(list(config.dns.servers), reactor), clock,
                         min_ttl=config.dns.min_ttl)
    locator.on_tls_target = network.tls_server_names.__setitem__
    locator.transports = frozenset(sent_by)
    trunk_status = TrunkStatus(list(config.trunks), clock)
    notifier, push_clients = _push_notifier(config, reactor, bindings)
    chain_holder = _RouterChainHolder(_router_chain(config, store, clock))
    cdrs = CdrWriter(store.cdrs, clock)     # batched: no INSERT + commit per call
    # Services the parts need running before the root exists (rtpengine's ng client).
    early_children = service.MultiService()  # type: ignore[no-untyped-call]
    services = CallServices(
        layer=layer, clock=clock, reactor=reactor, events=events,
        list_bindings=lambda aor: bindings.list_for_aor(aor, clock.seconds()),
        aor_for=registrar.aor_for, flow_for=registrar.flow_for,
        contact_for=contact_for, notifier=notifier,
        write_cdr=cdrs.write, settings=_call_settings(config),
        trunk_credentials=_trunk_credentials(config),
        metrics=metrics, media=_media_settings(config, reactor, early_children), locator=locator,
        kept_bindings=registrar.kept_bindings)
    calls = CallTable(services, chain_holder, list(config.trunks), auth,
                      store.users.ha1_lookup(config.sip.realm), throttle,
                      caller_id=_caller_id_policy(config, store))
    calls.trunk_status = trunk_status
    push = config.push
    mailbox_class: Any = Mailbox
    if cluster is not None:
        from b2bua.cluster import ClusterMailbox
        mailbox_class = ClusterMailbox
    mailbox = mailbox_class(
        store.messages, events, clock, layer, registrar.flow_for,
        lambda aor: [*bindings.list_for_aor(aor, clock.seconds()), *registrar.kept_bindings(aor)],
        notifier, MailboxLimits(push.message_lifetime, push.max_stored_messages,
                                push.max_stored_bytes))
    messages = MessageRelay(
        layer, chain_holder, mailbox, trunk_for=calls.trunk_for, authenticate=calls.authenticate,
        aor_for=registrar.aor_for, list_bindings=services.list_bindings,
        flow_for=registrar.flow_for, trunks=TrunkUris(calls),
        reactor=reactor, max_message_size=push.max_message_size,
        server_header=config.sip.user_agent)
    if cluster is not None:
        mailbox.node = cluster.node
    core = SipCore(config.sip.user_agent, layer=layer, registrar=registrar, calls=calls,
                   messages=messages)
    layer.attach(core)
    parts = ServiceParts(network, endpoint, core, layer, store, registrar, calls, bindings, cdrs,
                         notifier)
    root = B2buaService(config, clock, parts, metrics)
    root.mailbox, root.push_clients, root.trunk_status = mailbox, push_clients, trunk_status
    early_children.setServiceParent(root)  # type: ignore[no-untyped-call]

    def start_registration(trunk: Any) -> TrunkRegistration:
        contact = contact_for(trunk.transport).replace("sip:b2bua@", f"sip:{trunk.username}@")
        registration = TrunkRegistration(trunk, layer, clock, reactor, contact, locator=locator)
        registration.on_failure = trunk_status.failed
        registration.setServiceParent(root)  # type: ignore[no-untyped-call]
        return registration

    reloader = Reloader(root, chain_holder, ReloadParts(
        chain=lambda new: _router_chain(new, store, clock, reload_modules=True),
        client_tls=_client_tls_factory,
        caller_id=lambda new: _caller_id_policy(new, store),
        call_settings=_call_settings,
        trunk_credentials=_trunk_credentials,
        create_users=lambda new: _create_users(new, store),
        registration=start_registration))
    root.reload_routers = reloader.reload
    metrics.attach(root)
    list_refreshing = bindings.list_refreshing
    if cluster is not None:
        from b2bua.cluster import owned_by
        root.cluster = cluster
        core.store_available = lambda: cluster.feed.available
        cluster.feed.setServiceParent(root)  # type: ignore[no-untyped-call]
        list_refreshing = owned_by(cluster.writer, bindings.list_refreshing)

    root.refresh = RefreshScheduler(clock, notifier, list_refreshing, lead=PNSREG_INTERVAL)
    _Housekeeping(registrar, bindings, cdrs, mailbox, root.refresh).setServiceParent(root)  # type: ignore[no-untyped-call]
    _GcPacer(clock).setServiceParent(root)  # type: ignore[no-untyped-call]
    for client in push_clients.values():   # warm connections, PINGed, closed gracefully
        client.setServiceParent(root)
    if config.metrics.listen:
        web = web_service(root, config.metrics.listen, config.metrics.allow)
        web.setServiceParent(root)  # type: ignore[no-untyped-call]
    network.setServiceParent(root)  # type: ignore[no-untyped-call]
    for trunk in config.trunks:
        if trunk.register:
            trunk_status.registrations[trunk.name] = start_registration(trunk)
    return root


def _trunk_credentials(config: Config) -> dict[str, TrunkCredentials]:
    return {t.name: TrunkCredentials(t.username, t.password) for t in config.trunks if t.username}


class _RouterChainHolder:
    """The current router chain; SIGHUP swaps it, calls already routed keep theirs."""

    def __init__(self, chain: Any) -> None:
        self.chain = chain

    def swap(self, chain: Any) -> None:
        self.chain = chain

    def route(self, view: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = self.chain.route(view)
        return d


class _GcPacer(service.Service):
    """Keeps the cyclic GC's pauses short: everything alive is frozen every second.

    Under load most objects live for the RFC 3261 timers (32 s of lingering
    transactions and their messages: ~1.5 million objects at 400 calls/s), so
    every automatic collection of the older generations scanned them all
    (75 ms gen1 pauses, longer full ones).  Frozen objects are still freed by
    reference counting when they die (the call path makes no reference
    cycles), the collector only skips them; so each collection only scans what
    was allocated within the last second.  Cyclic garbage that got frozen is
    reclaimed once per ``reclaim_every`` by a full collection (one pause).
    """

    def __init__(self, clock: Any, freeze_every: float = 1.0,
                 reclaim_every: float = 3600.0) -> None:
        self.clock = clock
        self.freeze_every = freeze_every
        self.reclaim_every = reclaim_every
        self._loops: list[task.LoopingCall] = []

    def startService(self) -> None:  # noqa: N802
        super().startService()  # type: ignore[no-untyped-call]
        for action, interval in ((gc.freeze, self.freeze_every),
                                 (self.reclaim, self.reclaim_every)):
            loop = task.LoopingCall(action)
            loop.clock = self.clock
            loop.start(interval, now=False)
            self._loops.append(loop)

    def stopService(self) -> object:  # noqa: N802
        super().stopService()  # type: ignore[no-untyped-call]
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        return None

    @staticmethod
    def reclaim() -> None:
        """Collect everything once (frozen cyclic garbage included), then freeze again."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()


class _Housekeeping(service.Service):
    """Purges expired bindings on a timer; flushes pending binding and CDR writes at stop
    (it stops after the listeners and after the calls drained)."""

    def __init__(self, registrar: Registrar, bindings: BindingWriter,
                 cdrs: CdrWriter | None = None, mailbox: Mailbox | None = None,
                 refresh: RefreshScheduler | None = None) -> None:
        self.registrar = registrar
        self.bindings = bindings
        self.cdrs = cdrs
        self.mailbox = mailbox
        self.refresh = refresh

    def startService(self) -> None:  # noqa: N802
        super().startService()  # type: ignore[no-untyped-call]
        self.registrar.start_purging()
        if self.mailbox is not None:
            self.mailbox.start()
        if self.refresh is not None:
            self.refresh.start()

    def stopService(self) -> object:  # noqa: N802
        super().stopService()  # type: ignore[no-untyped-call]
        self.registrar.stop()
        if self.mailbox is not None:
            self.mailbox.stop()
        if self.refresh is not None:
            self.refresh.stop()
        if self.cdrs is not None:
            self.cdrs.flush()
        return self.bindings.flush()


def _open_store(config: Config) -> Store:
    path = config.database.path
    if str(path) != ":memory:":
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceBuildError(f"database.path: cannot create {path.parent}: {exc.strerror}") from exc
    try:
        return Store.open(path)
    except Exception as exc:
        raise ServiceBuildError(f"database.path: cannot open {path}: {exc}") from None


def _create_users(config: Config, store: Store) -> None:
    """[[users]] of the config are created at start if missing (never overwritten)."""
    realm = config.sip.realm
    for entry in config.users:
        if store.users.get(entry.name, realm) is None:
            try:
                store.users.add(entry.name, realm, entry.password, entry.display_name)
            except UserExists:   # cluster: another node starting created it first
                continue
            log.info("created user {name} from the config", name=entry.name)


def _push_notifier(config: Config, reactor: Any,
                   bindings: BindingWriter) -> tuple[PushNotifierRegistry, dict[str, Any]]:
    """The provider registry the calls push through, and its clients (to run as services)
    by provider name."""
    def token_dead(token: str) -> None:
        bindings.remove_push_token(token)

    registry = PushNotifierRegistry(on_token_dead=token_dead)
    try:
        clients = build_notifiers(config, reactor, registry)
    except PushConfigError as exc:
        raise ServiceBuildError(str(exc)) from None
    return registry, clients


def enabled_push_providers(config: Config) -> frozenset[str]:
    """The providers phones may register for: configured and enabled (RFC 8599 Feature-Caps)."""
    apns = config.apns
    return frozenset(name for name, on in (
        ("apns", apns.enabled), ("apns.dev", apns.enabled and bool(apns.sandbox_endpoint)),
        ("fcm", config.fcm.enabled)) if on)


def _router_chain(config: Config, store: Store, clock: Clock,
                  reload_modules: bool = False) -> object:
    realm = config.sip.realm

    def user_exists(name: str) -> bool:
        user = store.users.get(name, realm)
        return user is not None and user.enabled

    trunks = {t.name: TrunkInfo(t.name, t.uri) for t in config.trunks}
    context = RouterContext(config.sip.domain, user_exists, trunks, clock)
    entries = config.routers or (RouterEntry("local_users", {}),)
    try:
        return load_chain(entries, context, [config.base_dir], reload_modules=reload_modules)
    except PluginLoadError as exc:
        raise ServiceBuildError(str(exc)) from None


def _client_tls_factory(config: Config) -> Callable[[str], object]:
    """TLS client options per server name: a trunk's certificate must name the host of its
    URI (service_identity), trusted by the trunk's ca_file or else the system's roots."""
    roots: dict[str, Any] = {}
    for trunk in config.trunks:
        if trunk.ca_file is None:
            continue
        host = (parse_uri(trunk.uri).host or "").strip("[]")    # type: ignore[union-attr]
        try:
            pem = trunk.ca_file.read_bytes()
            blocks = [b"-----BEGIN CERTIFICATE-----" + part for part in
                      pem.split(b"-----BEGIN CERTIFICATE-----")[1:]]
            roots[host.lower()] = ssl.trustRootFromCertificates(  # type: ignore[no-untyped-call]
                [ssl.Certificate.loadPEM(block) for block in blocks])
        except Exception as exc:   # a bad PEM names the trunk, not a traceback
            raise ServiceBuildError(f"trunk {trunk.name}: ca_file: cannot load "
                                    f"({exc.__class__.__name__})") from None

    def options(host: str) -> object:
        root = roots.get(host.lower())
        if root is not None:
            return ssl.optionsForClientTLS(host, trustRoot=root)
        return ssl.optionsForClientTLS(host)
    return options


def _caller_id_policy(config: Config, store: Store) -> CallerIdPolicy:
    """Identity of local users' calls toward each trunk (b2bua.calls.caller_id)."""
    trunks = {t.name: TrunkIdentity(t.from_user, t.username, t.send_display_name)
              for t in config.trunks}
    return CallerIdPolicy(config.sip.domain, config.sip.realm, trunks,
                          UserPolicyStore(store.db), store.users)


def _contact_factory(sent_by: dict[str, str]) -> Callable[[str], str]:
    """Our Contact URI for a leg over ``transport``."""
    def contact_for(transport: str) -> str:
        transport = transport.upper()
        host = sent_by.get(transport) or next(iter(sent_by.values()))
        suffix = "" if transport == "UDP" or transport not in sent_by else \
            ";transport=" + transport.lower()
        return f"<sip:b2bua@{host}{suffix}>"
    return contact_for


def _media_settings(config: Config, reactor: object,
                    root: service.MultiService | None = None) -> MediaSettings | None:
    """RTP for calls: only when a tone (ringback 183) or the relay is configured.

    With ``engine = "rtpengine"`` relayed calls go to rtpengine over its ng socket, bound
    while ``root`` runs; the built-in relay still plays the 183 tone to woken phones' callers
    when ``relay`` is off (with it on, every call goes to rtpengine and callers hear 180).
    """
    media = config.media
    tone = config.push.ringback == "183"
    if not media.enabled or not (tone or media.relay):
        return None
    sip_host = next((listen.host for listen in config.sip.listen if listen.transport == "udp"),
                    config.sip.listen[0].host)
    bind = media.bind_address or ("" if sip_host in ("0.0.0.0", "::") else sip_host)
    advertised = (media.advertised_address or config.sip.advertised_address or bind
                  or "127.0.0.1")
    for codec in (PCMU, PCMA):
        encoded_cadence(media.country, codec)   # build the tone once, not on the first call
    rtpengine = None
    if media.engine == "rtpengine" and media.relay:
        rtpengine = NgClient(cast(Any, reactor), parse_endpoint(media.rtpengine))
        if root is not None:
            NgClientService(reactor, rtpengine).setServiceParent(root)  # type: ignore[no-untyped-call]
        tone = False
    return MediaSettings(reactor=reactor, ports=PortAllocator(media.rtp_port_min,
                                                              media.rtp_port_max),
                         advertised_address=advertised, bind_address=bind,
                         country=media.country, tone=tone, relay_all=media.relay,
                         rtp_timeout=media.rtp_timeout, rtpengine=rtpengine)


def _call_settings(config: Config) -> CallSettings:
    return CallSettings(
        ring_timeout=config.calls.ring_timeout, timer_c=config.calls.timer_c,
        max_duration=config.calls.max_duration, wake_timeout=config.push.wake_timeout,
        ringback=config.push.ringback, call_ended_push=config.push.call_ended_push,
        max_forwards=config.sip.max_forwards, server_header=config.sip.user_agent,
        ack_timeout=64 * config.sip.t1)
