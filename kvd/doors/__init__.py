"""The doors: protocol adapters the loop drives. Each turns a client's bytes into the node's
requests and the node's replies back into bytes; none touches the store itself, and none
replies before the loop has committed the turn's writes.

kvd.doors.native: kv's own protocol over ZeroMQ. kvd.doors.resp: the Redis protocol (RESP2/3)
on TCP. kvd.doors.http: HTTP/1.1 (REST, SSE, /health, /metrics); kvd.doors.starting
answers 503 on its port while the log replays. kvd.doors.zap: the ZAP
handler deciding who may finish a CURVE handshake (the loop polls it). Imports kvd.state and
`shared` only.
"""
