"""The bcc tracer: which KHO functions a kernel has (:mod:`.probes`), the
BPF program for them (:mod:`.program`), attaching with bcc
(:mod:`.session`, the only module that imports bcc), and the replay model
of the tracker (:mod:`.model`)."""
