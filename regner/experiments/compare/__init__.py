"""``regner compare``: the adaptive, budgeted comparison of every regularizer with ``none`` — racing of
strengths (:mod:`.racing`), sequential paired decisions per look (:mod:`.sequential`, :mod:`.engine`),
a run cache by resolved config (:mod:`.identity`, :mod:`.cache`), rounds within a budget
(:mod:`.driver`) on worker slots (:mod:`.execution`), and the report (:mod:`.report`). docs/ARCHITECTURE.md
gives the flow; docs/benchmarks/PROTOCOL.md the design."""
