"""Result and error codes in words beside the numbers (RFC 2661 section 4.4.2), for logs."""

from lns.l2tp.result import CdnResult, StopCcnResult, describe


def test_cdn_results_in_words():
    assert describe(3) == "result 3 (administrative)"
    assert describe(2, 4) == "result 2 (general error) error 4 (insufficient resources)"
    assert describe(99, codes=CdnResult) == "result 99 (unknown)"


def test_stopccn_results_in_words():
    assert describe(6, codes=StopCcnResult) == "result 6 (shutting down)"
    assert describe(4, codes=StopCcnResult) == "result 4 (not authorized)"
