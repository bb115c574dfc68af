"""The PPP layer (RFC 1661) carried in L2TP data messages.

Framing (:mod:`lns.ppp.frame`), the control packet and option codec shared by
LCP, IPCP, PAP and CHAP (:mod:`lns.ppp.packet`), and the RFC 1661 section 4
option negotiation automaton shared by LCP and IPCP (:mod:`lns.ppp.automaton`).
Like :mod:`lns.l2tp`, everything here is I/O-free: bytes, events and a clock in,
effects out.
"""
