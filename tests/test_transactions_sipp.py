"""Transactions against a lossy peer: SIPp drops 10 % of its packets.

Every call and every OPTIONS must still complete through retransmissions,
and a retransmitted request must be answered by its transaction, not start
a second one (one call per INVITE in the metrics, however often it was sent).
"""

from __future__ import annotations



from tests.support import (SCENARIOS, free_port, http_get, metric_value, run_sipp,
                           start_sipp, stop_process)

CALLS = 20


def test_calls_and_options_complete_with_ten_percent_loss(start_service) -> None:
    uas_port, mport = free_port(), free_port()
    svc = start_service(
        f'[metrics]\nlisten = "tcp:{mport}:interface=127.0.0.1"\n\n'
        '[[trunk]]\nname = "sipp"\nuri = "sip:127.0.0.1:5999"\naccept_from = ["127.0.0.1/32"]\n',
        routers=f'[[router]]\nplugin = "static"\ntarget = "sip:127.0.0.1:{uas_port}"\n')
    before = metric_value(http_get(f"http://127.0.0.1:{mport}/metrics"), "b2bua_requests_total", method="OPTIONS")  # readiness pings
    uas = start_sipp(["-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin"])
    try:
        caller = run_sipp(["-sn", "uac", f"127.0.0.1:{svc.port}", "-i", "127.0.0.1", "-p",
                           str(free_port()), "-m", str(CALLS), "-r", "10", "-lost", "10",
                           "-nostdin", "-timeout", "90s", "-timeout_error",
                           "-recv_timeout", "40000"], timeout=120)
        assert caller.returncode == 0, caller.stdout[-3000:] + svc.log()[-3000:]
        pings = run_sipp(["-sf", str(SCENARIOS / "options_lossy.xml"), f"127.0.0.1:{svc.port}",
                          "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(CALLS),
                          "-r", "10", "-lost", "10", "-nostdin", "-timeout", "60s",
                          "-timeout_error"], timeout=90)
        assert pings.returncode == 0, pings.stdout[-3000:]
    finally:
        stop_process(uas)
    text = http_get(f"http://127.0.0.1:{mport}/metrics")
    assert metric_value(text, "b2bua_calls_started_total") == CALLS       # one per call, not per send
    # A call whose last BYE SIPp's loss model swallowed stays up until our ACK/BYE timers
    # end it: every call is either completed with 200 or still held, none failed.
    completed = metric_value(text, "b2bua_calls_completed_total", status="200")
    assert completed + metric_value(text, "b2bua_calls_active") == CALLS, [
        line for line in text.splitlines() if line.startswith("b2bua_calls")]
    assert metric_value(text, "b2bua_requests_total", method="INVITE") == CALLS
    assert metric_value(text, "b2bua_requests_total", method="OPTIONS") - before == CALLS
    assert metric_value(text, "b2bua_transaction_retransmissions_absorbed_total") > 0
