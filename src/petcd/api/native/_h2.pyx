# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""HTTP/2 + gRPC framing over libnghttp2, sans-I/O: bytes in, batches of gRPC calls out.

One `Connection` per client connection. `feed(data)` runs nghttp2's receive side over the bytes
and returns every event they completed, as a list of 6-tuples
`(kind, stream_id, method_index, payload, timeout_s, metadata)`:

    EV_REQUEST   a unary or server-streaming call whose request stream ended with exactly one
                 message: payload is the message, timeout_s the grpc-timeout (0.0: none),
                 metadata a list of (name, value) str pairs or None
    EV_OPEN      a bidirectional call started (payload None)
    EV_MESSAGE   one more request message on an open bidi call (method_index -1)
    EV_HALF_CLOSE the client ended its side of a bidi call
    EV_CANCEL    the stream closed (RST_STREAM, GOAWAY, connection error) before we answered

The response side takes many calls before one drain: `respond(sid, payload)` answers a unary
call (headers, one message, OK trailers); `send_message(sid, payload)` queues one message on a
stream; `finish(sid, code, message)` ends a stream with a status (trailers-only when nothing was
sent yet). `drain()` runs nghttp2's send side once and returns `(bytes, writable_stream_ids)`.

Invariants:
- Python never runs per frame: callbacks only append to C buffers and to the event list.
- Errors a gRPC server answers by itself (unknown method, bad content-type, compressed or
  oversized messages, cardinality violations, bad grpc-timeout) are answered here, never seen
  by Python; a rejected stream is marked `answered` and its later DATA is dropped.
- Memory is bounded: a stream buffers at most one partial message (<= max message size) plus
  the bytes of messages handed to Python but not yet taken (bounded by its receive window,
  which is reopened only as Python takes messages); the connection's partial bytes are capped;
  streams per connection are capped by SETTINGS_MAX_CONCURRENT_STREAMS.
- A stream's Python object lives in `streams` exactly as long as nghttp2 knows the stream.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove


cdef extern from "nghttp2/nghttp2.h":
    ctypedef struct nghttp2_session:
        pass
    ctypedef struct nghttp2_session_callbacks:
        pass
    ctypedef struct nghttp2_option:
        pass

    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags

    ctypedef enum nghttp2_headers_category:
        NGHTTP2_HCAT_REQUEST
        NGHTTP2_HCAT_RESPONSE
        NGHTTP2_HCAT_PUSH_RESPONSE
        NGHTTP2_HCAT_HEADERS

    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        nghttp2_headers_category cat

    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers

    ctypedef struct nghttp2_nv:
        uint8_t *name
        uint8_t *value
        size_t namelen
        size_t valuelen
        uint8_t flags

    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value

    ctypedef union nghttp2_data_source:
        int fd
        void *ptr

    ctypedef ssize_t (*nghttp2_data_source_read_callback)(
        nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
        uint32_t *data_flags, nghttp2_data_source *source, void *user_data)

    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback

    ctypedef int (*nghttp2_on_begin_headers_callback)(
        nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
    ctypedef int (*nghttp2_on_header_callback)(
        nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data)
    ctypedef int (*nghttp2_on_data_chunk_recv_callback)(
        nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
        size_t len, void *user_data)
    ctypedef int (*nghttp2_on_frame_recv_callback)(
        nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
    ctypedef int (*nghttp2_on_frame_send_callback)(
        nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
    ctypedef int (*nghttp2_on_stream_close_callback)(
        nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)

    enum:
        NGHTTP2_FLAG_NONE
        NGHTTP2_FLAG_END_STREAM
        NGHTTP2_FLAG_END_HEADERS
        NGHTTP2_FLAG_ACK
        NGHTTP2_NV_FLAG_NONE
        NGHTTP2_NV_FLAG_NO_COPY_NAME
        NGHTTP2_NV_FLAG_NO_COPY_VALUE
        NGHTTP2_DATA
        NGHTTP2_HEADERS
        NGHTTP2_SETTINGS
        NGHTTP2_PING
        NGHTTP2_GOAWAY
        NGHTTP2_RST_STREAM
        NGHTTP2_DATA_FLAG_EOF
        NGHTTP2_DATA_FLAG_NO_END_STREAM
        NGHTTP2_ERR_DEFERRED
        NGHTTP2_ERR_CALLBACK_FAILURE
        NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        NGHTTP2_ERR_BAD_CLIENT_MAGIC
        NGHTTP2_NO_ERROR
        NGHTTP2_PROTOCOL_ERROR
        NGHTTP2_INTERNAL_ERROR
        NGHTTP2_REFUSED_STREAM
        NGHTTP2_CANCEL
        NGHTTP2_ENHANCE_YOUR_CALM
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
        NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        NGHTTP2_SETTINGS_MAX_FRAME_SIZE

    int nghttp2_session_callbacks_new(nghttp2_session_callbacks **callbacks_ptr)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks *callbacks)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(
        nghttp2_session_callbacks *cbs, nghttp2_on_begin_headers_callback cb)
    void nghttp2_session_callbacks_set_on_header_callback(
        nghttp2_session_callbacks *cbs, nghttp2_on_header_callback cb)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        nghttp2_session_callbacks *cbs, nghttp2_on_data_chunk_recv_callback cb)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(
        nghttp2_session_callbacks *cbs, nghttp2_on_frame_recv_callback cb)
    void nghttp2_session_callbacks_set_on_frame_send_callback(
        nghttp2_session_callbacks *cbs, nghttp2_on_frame_send_callback cb)
    void nghttp2_session_callbacks_set_on_stream_close_callback(
        nghttp2_session_callbacks *cbs, nghttp2_on_stream_close_callback cb)

    int nghttp2_option_new(nghttp2_option **option_ptr)
    void nghttp2_option_del(nghttp2_option *option)
    void nghttp2_option_set_no_auto_window_update(nghttp2_option *option, int val)
    void nghttp2_option_set_max_outbound_ack(nghttp2_option *option, size_t val)
    void nghttp2_option_set_max_settings(nghttp2_option *option, size_t val)
    void nghttp2_option_set_max_continuations(nghttp2_option *option, size_t val)
    void nghttp2_option_set_stream_reset_rate_limit(
        nghttp2_option *option, uint64_t burst, uint64_t rate)
    void nghttp2_option_set_max_deflate_dynamic_table_size(nghttp2_option *option, size_t val)

    int nghttp2_session_server_new2(
        nghttp2_session **session_ptr, const nghttp2_session_callbacks *callbacks,
        void *user_data, const nghttp2_option *option)
    void nghttp2_session_del(nghttp2_session *session)
    ssize_t nghttp2_session_mem_recv(nghttp2_session *session, const uint8_t *data, size_t inlen)
    ssize_t nghttp2_session_mem_send(nghttp2_session *session, const uint8_t **data_ptr)
    int nghttp2_session_want_read(nghttp2_session *session)
    int nghttp2_session_want_write(nghttp2_session *session)
    int nghttp2_session_consume_connection(nghttp2_session *session, size_t size)
    int nghttp2_session_consume_stream(nghttp2_session *session, int32_t stream_id, size_t size)
    int nghttp2_session_set_stream_user_data(
        nghttp2_session *session, int32_t stream_id, void *stream_user_data)
    int nghttp2_session_resume_data(nghttp2_session *session, int32_t stream_id)
    int nghttp2_session_get_stream_remote_close(nghttp2_session *session, int32_t stream_id)
    int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *session)
    int nghttp2_session_set_local_window_size(
        nghttp2_session *session, uint8_t flags, int32_t stream_id, int32_t window_size)
    int nghttp2_session_terminate_session(nghttp2_session *session, uint32_t error_code)
    int nghttp2_submit_settings(
        nghttp2_session *session, uint8_t flags, const nghttp2_settings_entry *iv, size_t niv)
    int nghttp2_submit_response(
        nghttp2_session *session, int32_t stream_id, const nghttp2_nv *nva, size_t nvlen,
        const nghttp2_data_provider *data_prd)
    int nghttp2_submit_trailer(
        nghttp2_session *session, int32_t stream_id, const nghttp2_nv *nva, size_t nvlen)
    int nghttp2_submit_rst_stream(
        nghttp2_session *session, uint8_t flags, int32_t stream_id, uint32_t error_code)
    int nghttp2_submit_ping(nghttp2_session *session, uint8_t flags, const uint8_t *opaque_data)
    int nghttp2_submit_goaway(
        nghttp2_session *session, uint8_t flags, int32_t last_stream_id, uint32_t error_code,
        const uint8_t *opaque_data, size_t opaque_data_len)
    int nghttp2_submit_shutdown_notice(nghttp2_session *session)
    const char *nghttp2_strerror(int lib_error_code)


# Event kinds (petcd.api.native.server mirrors these numbers).
EV_REQUEST = 0
EV_OPEN = 1
EV_MESSAGE = 2
EV_HALF_CLOSE = 3
EV_CANCEL = 4

# Method kinds as registered by the caller.
KIND_UNARY = 0
KIND_SERVER_STREAM = 1
KIND_BIDI = 2

# gRPC status codes answered from here.
cdef int GRPC_INTERNAL = 13
cdef int GRPC_UNIMPLEMENTED = 12
cdef int GRPC_RESOURCE_EXHAUSTED = 8

cdef bytes CLIENT_MAGIC = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
cdef int MAGIC_LEN = 24
cdef tuple HTTP1_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ",
                            b"PATCH ", b"CONNECT ", b"TRACE ")
cdef bytes HTTP1_RESPONSE = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: 51\r\n\r\npetcd: this port serves gRPC over HTTP/2 (no HTTP/1)\n"
)
# Headers that are transport business, never call metadata.
cdef frozenset RESERVED_HEADERS = frozenset((
    b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding",
    b"user-agent", b"grpc-message-type", b"content-length",
))
#: Bytes of queued output above which send_message() tells the caller to wait.
cdef Py_ssize_t OUT_HIGH_WATER = 256 * 1024
cdef Py_ssize_t OUT_LOW_WATER = 64 * 1024
#: Header bytes (name + value + 32 per field, as HPACK counts) a request may carry.
cdef Py_ssize_t HEADER_LIST_MAX = 64 * 1024


class ProtocolError(Exception):
    """The connection is beyond repair (bad preface, fatal nghttp2 error): close it."""


cdef class _Buf:
    """A growable byte buffer with a read offset (C memory, freed with the object)."""

    cdef char *data
    cdef Py_ssize_t start
    cdef Py_ssize_t end
    cdef Py_ssize_t cap

    def __dealloc__(self):
        if self.data != NULL:
            free(self.data)
            self.data = NULL

    cdef inline Py_ssize_t size(self):
        return self.end - self.start

    cdef int append(self, const char *src, Py_ssize_t n) except -1:
        cdef Py_ssize_t live = self.end - self.start
        cdef Py_ssize_t want
        cdef char *grown
        assert n >= 0
        if self.end + n > self.cap:
            if self.start > 0:
                memmove(self.data, self.data + self.start, live)
                self.start = 0
                self.end = live
            if self.end + n > self.cap:
                want = max(self.cap * 2, self.end + n, 256)
                grown = <char *>realloc(self.data, want)
                if grown == NULL:
                    raise MemoryError()
                self.data = grown
                self.cap = want
        memcpy(self.data + self.end, src, n)
        self.end += n
        assert self.end <= self.cap
        return 0

    cdef void consume(self, Py_ssize_t n):
        self.start += n
        if self.start >= self.end:
            self.start = 0
            self.end = 0

    cdef void release(self):
        if self.data != NULL and self.cap > 65536:
            free(self.data)
            self.data = NULL
            self.cap = 0
        self.start = 0
        self.end = 0


cdef class _Stream:
    cdef int32_t sid
    cdef int method          # index into the caller's table, -1 when unknown
    cdef int kind
    cdef bint bad_method     # :method is not POST
    cdef bint bad_type       # content-type is not application/grpc*
    cdef bint bad_encoding   # grpc-encoding other than identity
    cdef bint bad_timeout
    cdef bint too_large_headers
    cdef Py_ssize_t header_bytes
    cdef double timeout_s
    cdef list metadata
    cdef bint dispatched     # Python knows the call
    cdef bint answered       # the final status is submitted or queued
    cdef bint headers_sent
    cdef bint deferred       # the data provider returned DEFERRED
    cdef bint blocked        # send_message reported high water; report writable
    cdef object message      # unary: the request once complete
    cdef int messages
    cdef _Buf inbuf          # partial incoming message
    cdef _Buf outbuf         # outgoing framed messages
    cdef int status          # trailers to send once outbuf drains (answered)
    cdef bytes status_message
    cdef int64_t received    # stream bytes received (DATA payload)
    cdef int64_t consumed    # stream bytes given back to the window
    cdef int64_t untaken     # bytes of messages handed to Python, not taken yet

    def __cinit__(self):
        self.method = -1
        self.inbuf = _Buf()
        self.outbuf = _Buf()


cdef nghttp2_nv make_nv(const char *name, Py_ssize_t namelen, const char *value,
                        Py_ssize_t valuelen, uint8_t flags):
    cdef nghttp2_nv nv
    nv.name = <uint8_t *>name
    nv.namelen = namelen
    nv.value = <uint8_t *>value
    nv.valuelen = valuelen
    nv.flags = flags
    return nv


cdef uint8_t STATIC_NV = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE


cdef double parse_timeout(const uint8_t *value, size_t n):
    """grpc-timeout: up to 8 ASCII digits and a unit (H M S m u n); -1.0 when malformed."""
    cdef double amount = 0.0
    cdef size_t i
    cdef uint8_t unit
    if n < 2 or n > 9:
        return -1.0
    for i in range(n - 1):
        if value[i] < 48 or value[i] > 57:
            return -1.0
        amount = amount * 10.0 + (value[i] - 48)
    unit = value[n - 1]
    if unit == 72:  # H
        return amount * 3600.0
    if unit == 77:  # M
        return amount * 60.0
    if unit == 83:  # S
        return amount
    if unit == 109:  # m
        return amount / 1e3
    if unit == 117:  # u
        return amount / 1e6
    if unit == 110:  # n
        return amount / 1e9
    return -1.0


def percent_encode(str message):
    """grpc-message encoding: printable ASCII except '%' stays, every other byte is %XX."""
    cdef bytes raw = message.encode("utf-8")
    cdef bytearray out = bytearray()
    cdef unsigned char c
    for c in raw:
        if 0x20 <= c <= 0x7E and c != 0x25:
            out.append(c)
        else:
            out += b"%%%02X" % c
    return bytes(out)


cdef class Connection:
    """One HTTP/2 server session. See the module docstring for the event and response API."""

    cdef nghttp2_session *session
    cdef dict methods        # path bytes -> index * 4 + kind
    cdef dict streams        # stream id -> _Stream
    cdef list events
    cdef list writable
    cdef Py_ssize_t max_message_bytes
    cdef Py_ssize_t partial_bytes_max
    cdef Py_ssize_t partial_bytes
    cdef object error        # an exception raised inside a callback
    cdef int preface         # bytes of the client magic checked so far; -1 once HTTP/2
    cdef public bint http1   # the peer spoke HTTP/1.x: answered, closing
    cdef public bint closing
    cdef public int pings_acked
    cdef public bint got_settings
    cdef bytes pending_out   # bytes to send before nghttp2's (the HTTP/1 answer)

    def __cinit__(self, dict methods not None, Py_ssize_t max_message_bytes,
                  uint32_t max_concurrent_streams=4096, int32_t initial_window_bytes=1 << 20,
                  int32_t connection_window_bytes=16 << 20,
                  Py_ssize_t partial_bytes_max=64 << 20):
        cdef nghttp2_session_callbacks *callbacks
        cdef nghttp2_option *option
        cdef nghttp2_settings_entry iv[4]
        cdef int rv
        assert max_message_bytes > 0
        assert max_concurrent_streams > 0
        assert initial_window_bytes > 0 and connection_window_bytes > 0
        self.methods = methods
        self.streams = {}
        self.events = []
        self.writable = []
        self.max_message_bytes = max_message_bytes
        self.partial_bytes_max = max(partial_bytes_max, 2 * max_message_bytes)
        self.pending_out = b""
        if nghttp2_session_callbacks_new(&callbacks) != 0:
            raise MemoryError()
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close)
        if nghttp2_option_new(&option) != 0:
            nghttp2_session_callbacks_del(callbacks)
            raise MemoryError()
        # We reopen windows ourselves, as Python takes messages: that bounds buffering.
        nghttp2_option_set_no_auto_window_update(option, 1)
        nghttp2_option_set_max_outbound_ack(option, 1000)
        nghttp2_option_set_max_settings(option, 32)
        nghttp2_option_set_max_continuations(option, 8)
        # Rapid reset (CVE-2023-44487): at most a burst of 1000 resets, then 33 per second.
        nghttp2_option_set_stream_reset_rate_limit(option, 1000, 33)
        rv = nghttp2_session_server_new2(&self.session, callbacks, <void *>self, option)
        nghttp2_option_del(option)
        nghttp2_session_callbacks_del(callbacks)
        if rv != 0:
            raise MemoryError()
        iv[0].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        iv[0].value = max_concurrent_streams
        iv[1].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
        iv[1].value = initial_window_bytes
        iv[2].settings_id = NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        iv[2].value = HEADER_LIST_MAX
        iv[3].settings_id = NGHTTP2_SETTINGS_MAX_FRAME_SIZE
        iv[3].value = 16384
        rv = nghttp2_submit_settings(self.session, NGHTTP2_FLAG_NONE, iv, 4)
        assert rv == 0, nghttp2_strerror(rv)
        rv = nghttp2_session_set_local_window_size(
            self.session, NGHTTP2_FLAG_NONE, 0, connection_window_bytes)
        assert rv == 0, nghttp2_strerror(rv)

    def __dealloc__(self):
        if self.session != NULL:
            nghttp2_session_del(self.session)
            self.session = NULL

    # ---------------------------------------------------------------- receive side

    def feed(self, bytes data not None):
        """Run the receive side over `data`; the events it completed (see module docstring)."""
        cdef const char *ptr = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef ssize_t rv
        cdef list events
        if self.closing:
            return []
        if self.preface >= 0:
            n = self._sniff(ptr, n)
            if n < 0:
                return []
        rv = nghttp2_session_mem_recv(self.session, <const uint8_t *>ptr, n)
        events = self.events
        self.events = []
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        if rv < 0:
            self.closing = True
            if rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC:
                raise ProtocolError("bad HTTP/2 client preface")
            raise ProtocolError(nghttp2_strerror(<int>rv).decode())
        assert rv == n, "mem_recv consumes everything or fails"
        return events

    cdef Py_ssize_t _sniff(self, const char *ptr, Py_ssize_t n) except -2:
        """Check the client magic as it arrives; answer HTTP/1.x; -1 when not HTTP/2."""
        cdef Py_ssize_t check = min(n, MAGIC_LEN - self.preface)
        cdef bytes head
        if memcmp(ptr, PyBytes_AS_STRING(CLIENT_MAGIC) + self.preface, check) == 0:
            self.preface += check
            if self.preface == MAGIC_LEN:
                self.preface = -1
            return n
        head = PyBytes_FromStringAndSize(ptr, min(n, 8))
        if self.preface == 0 and head.startswith(HTTP1_METHODS):
            self.http1 = True
            self.pending_out = HTTP1_RESPONSE
        self.closing = True
        return -1

    def consume(self, int32_t sid, Py_ssize_t nbytes):
        """Python took a message of `nbytes` (prefix included): reopen the stream's window."""
        cdef _Stream stream = self.streams.get(sid)
        assert nbytes >= 0
        if stream is None:
            return
        stream.untaken -= nbytes
        assert stream.untaken >= 0
        self._give_back(stream)

    cdef void _give_back(self, _Stream stream):
        cdef int64_t target = stream.received - stream.untaken
        if target > stream.consumed:
            nghttp2_session_consume_stream(self.session, stream.sid, target - stream.consumed)
            stream.consumed = target

    # ---------------------------------------------------------------- response side

    def respond(self, int32_t sid, bytes payload not None):
        """Answer a unary call: headers, one message, OK trailers. False if the stream is gone."""
        cdef _Stream stream = self.streams.get(sid)
        if stream is None or stream.answered:
            return False
        self._queue_message(stream, payload)
        stream.answered = True
        stream.status = 0
        return self._start_or_resume(stream) == 0

    def send_message(self, int32_t sid, bytes payload not None):
        """Queue one message; 1 = queued, over high water (wait for writable); 0 = queued;
        -1 = the stream is gone or already finished."""
        cdef _Stream stream = self.streams.get(sid)
        if stream is None or stream.answered:
            return -1
        self._queue_message(stream, payload)
        if self._start_or_resume(stream) != 0:
            return -1
        if stream.outbuf.size() > OUT_HIGH_WATER:
            stream.blocked = True
            return 1
        return 0

    def finish(self, int32_t sid, int code, str message=""):
        """End the call with a status; trailers-only if no message was sent. False if gone."""
        cdef _Stream stream = self.streams.get(sid)
        if stream is None or stream.answered:
            return False
        assert 0 <= code <= 16
        self._answer(stream, code, percent_encode(message) if message else b"")
        return True

    def reset(self, int32_t sid, uint32_t error_code=NGHTTP2_CANCEL):
        cdef _Stream stream = self.streams.get(sid)
        if stream is not None:
            stream.answered = True
            nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, sid, error_code)

    def ping(self):
        cdef uint8_t opaque[8]
        memcpy(opaque, b"petcdpng", 8)
        nghttp2_submit_ping(self.session, NGHTTP2_FLAG_NONE, opaque)

    def shutdown_notice(self):
        """First half of a graceful GOAWAY: no new streams please (RFC 9113 §6.8)."""
        nghttp2_submit_shutdown_notice(self.session)

    def goaway(self, uint32_t error_code=NGHTTP2_NO_ERROR):
        """The final GOAWAY, naming the last stream we processed."""
        cdef int32_t last = nghttp2_session_get_last_proc_stream_id(self.session)
        nghttp2_submit_goaway(self.session, NGHTTP2_FLAG_NONE, last, error_code, NULL, 0)

    def terminate(self, uint32_t error_code=NGHTTP2_NO_ERROR):
        nghttp2_session_terminate_session(self.session, error_code)

    def drain(self):
        """Everything nghttp2 has to send now, and the streams that fell below low water."""
        cdef const uint8_t *data
        cdef ssize_t n
        cdef list parts = []
        cdef int rounds = 0
        cdef list writable
        if self.pending_out:
            parts.append(self.pending_out)
            self.pending_out = b""
        if self.preface == -1:  # nothing HTTP/2 goes out before the client's magic is whole
            while rounds < 4096:  # bounded: each round sends at least one frame
                rounds += 1
                n = nghttp2_session_mem_send(self.session, &data)
                if n < 0:
                    self.closing = True
                    break
                if n == 0:
                    break
                parts.append(PyBytes_FromStringAndSize(<const char *>data, n))
            if self.error is not None:
                error, self.error = self.error, None
                raise error
        writable = self.writable
        self.writable = []
        if len(parts) == 1:
            return parts[0], writable
        return b"".join(parts), writable

    def want_close(self):
        """True when the session is over (GOAWAY exchanged, fatal error, or not HTTP/2)."""
        if self.closing:
            return True
        return not nghttp2_session_want_read(self.session) and not nghttp2_session_want_write(
            self.session)

    def want_write(self):
        return bool(nghttp2_session_want_write(self.session))

    def active_streams(self):
        return len(self.streams)

    # ---------------------------------------------------------------- internals

    cdef int _queue_message(self, _Stream stream, bytes payload) except -1:
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
        cdef char prefix[5]
        assert n < (1 << 32)
        prefix[0] = 0
        prefix[1] = <char>((n >> 24) & 0xFF)
        prefix[2] = <char>((n >> 16) & 0xFF)
        prefix[3] = <char>((n >> 8) & 0xFF)
        prefix[4] = <char>(n & 0xFF)
        stream.outbuf.append(prefix, 5)
        stream.outbuf.append(PyBytes_AS_STRING(payload), n)
        return 0

    cdef int _start_or_resume(self, _Stream stream) except -2:
        cdef nghttp2_nv nva[2]
        cdef nghttp2_data_provider prd
        cdef int rv
        if not stream.headers_sent:
            stream.headers_sent = True
            nva[0] = make_nv(b":status", 7, b"200", 3, STATIC_NV)
            nva[1] = make_nv(b"content-type", 12, b"application/grpc", 16, STATIC_NV)
            prd.source.ptr = <void *>stream
            prd.read_callback = read_data
            rv = nghttp2_submit_response(self.session, stream.sid, nva, 2, &prd)
            if rv != 0:  # only a session being torn down (fatal error, flood) refuses this
                stream.answered = True
                return -1
        elif stream.deferred:
            stream.deferred = False
            nghttp2_session_resume_data(self.session, stream.sid)
        return 0

    cdef int _answer(self, _Stream stream, int code, bytes message) except -1:
        """Finish with a status: trailers after queued data, or trailers-only."""
        cdef nghttp2_nv nva[4]
        cdef bytes code_text
        cdef int rv
        assert not stream.answered
        stream.answered = True
        if stream.headers_sent:
            stream.status = code
            stream.status_message = message
            if stream.deferred:
                stream.deferred = False
                nghttp2_session_resume_data(self.session, stream.sid)
            return 0
        stream.headers_sent = True
        code_text = str(code).encode()
        nva[0] = make_nv(b":status", 7, b"200", 3, STATIC_NV)
        nva[1] = make_nv(b"content-type", 12, b"application/grpc", 16, STATIC_NV)
        nva[2] = make_nv(b"grpc-status", 11, PyBytes_AS_STRING(code_text),
                         PyBytes_GET_SIZE(code_text), NGHTTP2_NV_FLAG_NO_COPY_NAME)
        nva[3] = make_nv(b"grpc-message", 12, PyBytes_AS_STRING(message),
                         PyBytes_GET_SIZE(message), NGHTTP2_NV_FLAG_NO_COPY_NAME)
        # a refusal means the session is being torn down: nobody is left to tell
        nghttp2_submit_response(self.session, stream.sid, nva, 4 if message else 3, NULL)
        return 0

    cdef int _reject(self, _Stream stream, int code, str message) except -1:
        """Answer a call we refuse before Python sees it; drop what the client still sends."""
        if stream.answered:
            return 0
        self._answer(stream, code, percent_encode(message))
        self.partial_bytes -= stream.inbuf.size()
        stream.inbuf.release()
        stream.message = None
        return 0

    cdef int _begin(self, const nghttp2_frame *frame) except -1:
        cdef int32_t sid = frame.hd.stream_id
        cdef _Stream stream
        if frame.headers.cat != NGHTTP2_HCAT_REQUEST:
            return 0
        stream = _Stream()
        stream.sid = sid
        self.streams[sid] = stream
        nghttp2_session_set_stream_user_data(self.session, sid, <void *>stream)
        return 0

    cdef int _header(self, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen) except -1:
        cdef _Stream stream
        cdef bytes key
        cdef object code
        if frame.headers.cat != NGHTTP2_HCAT_REQUEST:
            return 0  # client trailers carry nothing we use
        stream = self.streams.get(frame.hd.stream_id)
        if stream is None:
            return 0
        stream.header_bytes += <Py_ssize_t>(namelen + valuelen + 32)
        if stream.header_bytes > HEADER_LIST_MAX:
            stream.too_large_headers = True
            return 0
        if namelen == 5 and memcmp(name, b":path", 5) == 0:
            code = self.methods.get(PyBytes_FromStringAndSize(<const char *>value, valuelen))
            if code is not None:
                stream.method = (<int>code) >> 2
                stream.kind = (<int>code) & 3
            return 0
        if namelen == 7 and memcmp(name, b":method", 7) == 0:
            stream.bad_method = not (valuelen == 4 and memcmp(value, b"POST", 4) == 0)
            return 0
        if name[0] == 58:  # other pseudo headers (:scheme, :authority)
            return 0
        if (namelen == 2 and memcmp(name, b"te", 2) == 0) or (
                namelen == 10 and memcmp(name, b"user-agent", 10) == 0):
            return 0  # "te", "user-agent": every request has them, no call needs them
        if namelen == 12 and memcmp(name, b"content-type", 12) == 0:
            stream.bad_type = not (valuelen >= 16 and memcmp(value, b"application/grpc", 16) == 0
                                   and (valuelen == 16 or value[16] == 43 or value[16] == 59))
            return 0
        if namelen == 12 and memcmp(name, b"grpc-timeout", 12) == 0:
            stream.timeout_s = parse_timeout(value, valuelen)
            stream.bad_timeout = stream.timeout_s < 0.0
            if stream.timeout_s == 0.0:
                stream.timeout_s = 1e-9  # "0S" is a deadline already past, not "none" (0.0)
            return 0
        if namelen == 13 and memcmp(name, b"grpc-encoding", 13) == 0:
            stream.bad_encoding = not (valuelen == 8 and memcmp(value, b"identity", 8) == 0)
            return 0
        key = PyBytes_FromStringAndSize(<const char *>name, namelen)
        if key in RESERVED_HEADERS:
            return 0
        if stream.metadata is None:
            stream.metadata = []
        stream.metadata.append(
            (key.decode("latin-1"),
             PyBytes_FromStringAndSize(<const char *>value, valuelen).decode("latin-1")))
        return 0

    cdef int _headers_done(self, _Stream stream) except -1:
        """Request headers complete: refuse what we cannot serve, open bidi calls."""
        if stream.too_large_headers:
            return self._reject(stream, GRPC_RESOURCE_EXHAUSTED, "header list size too large")
        if stream.bad_method or stream.bad_type:
            return self._reject_http(stream, b"405" if stream.bad_method else b"415")
        if stream.method < 0:
            return self._reject(stream, GRPC_UNIMPLEMENTED, "Method not found!")
        if stream.bad_encoding:
            return self._reject(stream, GRPC_UNIMPLEMENTED,
                                "grpc: Decompressor is not installed for grpc-encoding")
        if stream.bad_timeout:
            return self._reject(stream, GRPC_INTERNAL, "malformed grpc-timeout")
        if stream.kind == KIND_BIDI:
            stream.dispatched = True
            self.events.append(
                (EV_OPEN, stream.sid, stream.method, None, stream.timeout_s, stream.metadata))
        return 0

    cdef int _reject_http(self, _Stream stream, bytes status) except -1:
        cdef nghttp2_nv nva[1]
        stream.answered = True
        stream.headers_sent = True
        nva[0] = make_nv(b":status", 7, PyBytes_AS_STRING(status), 3, NGHTTP2_NV_FLAG_NO_COPY_NAME)
        nghttp2_submit_response(self.session, stream.sid, nva, 1, NULL)
        return 0

    cdef int _data(self, int32_t sid, const char *data, Py_ssize_t n) except -1:
        cdef _Stream stream = self.streams.get(sid)
        cdef Py_ssize_t used
        cdef _Buf inbuf
        nghttp2_session_consume_connection(self.session, n)
        if stream is None:
            return 0
        stream.received += n
        if not stream.answered:
            inbuf = stream.inbuf
            if inbuf.size() == 0:
                # Fast path: whole messages straight from nghttp2's buffer, no copy.
                used = self._extract(stream, data, n)
                if used < n and not stream.answered:
                    self._buffer(stream, data + used, n - used)
            else:
                self._buffer(stream, data, n)
                if not stream.answered:
                    used = self._extract(stream, inbuf.data + inbuf.start, inbuf.size())
                    if not stream.answered:  # a refusal released the buffer already
                        inbuf.consume(used)
                        self.partial_bytes -= used
        self._give_back(stream)
        assert self.partial_bytes >= 0
        return 0

    cdef int _buffer(self, _Stream stream, const char *data, Py_ssize_t n) except -1:
        if self.partial_bytes + n > self.partial_bytes_max:
            return self._reject(stream, GRPC_RESOURCE_EXHAUSTED,
                                "petcd: connection receive buffer full")
        stream.inbuf.append(data, n)
        self.partial_bytes += n
        return 0

    cdef Py_ssize_t _extract(self, _Stream stream, const char *p, Py_ssize_t n) except -1:
        """Hand over every whole message in p[0:n]; the bytes used (all of them on refusal)."""
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t length
        cdef const uint8_t *u = <const uint8_t *>p
        while n - pos >= 5 and not stream.answered:
            length = ((<Py_ssize_t>u[pos + 1]) << 24) | (u[pos + 2] << 16) | (u[pos + 3] << 8) | u[pos + 4]
            if u[pos] != 0:
                self._reject(stream, GRPC_INTERNAL,
                             "grpc: compressed flag set with identity or empty encoding"
                             if u[pos] == 1 else "grpc: invalid message flag")
                return n
            if length > self.max_message_bytes:
                self._reject(stream, GRPC_RESOURCE_EXHAUSTED,
                             "Received message larger than max (%d vs. %d)"
                             % (length, self.max_message_bytes))
                return n
            if n - pos - 5 < length:
                break
            self._message(stream, PyBytes_FromStringAndSize(p + pos + 5, length), 5 + length)
            pos += 5 + length
        if stream.answered:
            return n
        assert 0 <= pos <= n
        return pos

    cdef int _message(self, _Stream stream, bytes message, Py_ssize_t size) except -1:
        if stream.kind == KIND_BIDI:
            stream.untaken += size
            self.events.append((EV_MESSAGE, stream.sid, -1, message, 0.0, None))
            return 0
        if stream.messages > 0:
            return self._reject(stream, GRPC_INTERNAL,
                                "grpc: more than one request message for a unary request")
        stream.messages = 1
        stream.message = message
        return 0

    cdef int _end(self, _Stream stream) except -1:
        """The client ended its side of the stream."""
        if stream.answered:
            return 0
        if stream.inbuf.size() > 0:
            return self._reject(stream, GRPC_INTERNAL, "grpc: request message truncated")
        if stream.kind == KIND_BIDI:
            if stream.dispatched:
                self.events.append((EV_HALF_CLOSE, stream.sid, -1, None, 0.0, None))
            return 0
        if stream.messages != 1:
            return self._reject(stream, GRPC_INTERNAL, "grpc: no request message")
        stream.dispatched = True
        self.events.append(
            (EV_REQUEST, stream.sid, stream.method, stream.message, stream.timeout_s,
             stream.metadata))
        stream.message = None
        return 0

    cdef int _frame_recv(self, const nghttp2_frame *frame) except -1:
        cdef _Stream stream
        cdef uint8_t kind = frame.hd.type
        if kind == NGHTTP2_DATA or kind == NGHTTP2_HEADERS:
            stream = self.streams.get(frame.hd.stream_id)
            if stream is None:
                return 0
            if kind == NGHTTP2_HEADERS and frame.headers.cat == NGHTTP2_HCAT_REQUEST:
                self._headers_done(stream)
            if frame.hd.flags & NGHTTP2_FLAG_END_STREAM:
                self._end(stream)
        elif kind == NGHTTP2_SETTINGS:
            if not (frame.hd.flags & NGHTTP2_FLAG_ACK):
                self.got_settings = True
        elif kind == NGHTTP2_PING:
            if frame.hd.flags & NGHTTP2_FLAG_ACK:
                self.pings_acked += 1
        return 0

    cdef int _frame_send(self, const nghttp2_frame *frame) except -1:
        cdef int32_t sid = frame.hd.stream_id
        if (frame.hd.type == NGHTTP2_DATA or frame.hd.type == NGHTTP2_HEADERS) and (
                frame.hd.flags & NGHTTP2_FLAG_END_STREAM):
            # Answered before the client finished sending: ask it to stop, without error
            # (RFC 9113 §8.1), so the stream does not linger half-open.
            if sid in self.streams and not nghttp2_session_get_stream_remote_close(
                    self.session, sid):
                nghttp2_submit_rst_stream(self.session, NGHTTP2_FLAG_NONE, sid, NGHTTP2_NO_ERROR)
        return 0

    cdef int _stream_close(self, int32_t sid, uint32_t error_code) except -1:
        cdef _Stream stream = self.streams.pop(sid, None)
        if stream is None:
            return 0
        self.partial_bytes -= stream.inbuf.size()
        stream.inbuf.release()
        stream.outbuf.release()
        if stream.dispatched and not stream.answered:
            stream.answered = True
            self.events.append((EV_CANCEL, sid, -1, None, 0.0, None))
        assert self.partial_bytes >= 0
        return 0

    cdef ssize_t _read(self, _Stream stream, uint8_t *buf, size_t length,
                       uint32_t *data_flags) except -1:
        cdef _Buf out = stream.outbuf
        cdef Py_ssize_t n = min(<Py_ssize_t>length, out.size())
        if n > 0:
            memcpy(buf, out.data + out.start, n)
            out.consume(n)
            if stream.blocked and out.size() <= OUT_LOW_WATER:
                stream.blocked = False
                self.writable.append(stream.sid)
        if out.size() > 0:
            return n
        if not stream.answered:
            if n > 0:
                return n
            stream.deferred = True
            return NGHTTP2_ERR_DEFERRED
        data_flags[0] |= NGHTTP2_DATA_FLAG_EOF
        if self._trailers(stream) == 0:
            data_flags[0] |= NGHTTP2_DATA_FLAG_NO_END_STREAM
        out.release()
        return n

    cdef int _trailers(self, _Stream stream) except? -1:
        cdef nghttp2_nv nva[2]
        cdef bytes code_text = str(stream.status).encode()
        cdef bytes message = stream.status_message or b""
        nva[0] = make_nv(b"grpc-status", 11, PyBytes_AS_STRING(code_text),
                         PyBytes_GET_SIZE(code_text), NGHTTP2_NV_FLAG_NO_COPY_NAME)
        nva[1] = make_nv(b"grpc-message", 12, PyBytes_AS_STRING(message),
                         PyBytes_GET_SIZE(message), NGHTTP2_NV_FLAG_NO_COPY_NAME)
        return nghttp2_submit_trailer(self.session, stream.sid, nva, 2 if message else 1)


# ---------------------------------------------------------------- nghttp2 callbacks
# Each forwards to the Connection; a Python exception is kept and re-raised by feed/drain.

cdef int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
                          void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        return conn._begin(frame)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                   size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                   void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        return conn._header(frame, name, namelen, value, valuelen)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                       const uint8_t *data, size_t length, void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        return conn._data(stream_id, <const char *>data, length)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame,
                       void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        return conn._frame_recv(frame)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame,
                       void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        return conn._frame_send(frame)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                         void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        return conn._stream_close(stream_id, error_code)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE


cdef ssize_t read_data(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                       uint32_t *data_flags, nghttp2_data_source *source,
                       void *user_data) noexcept:
    cdef Connection conn = <Connection>user_data
    try:
        return conn._read(<_Stream>source.ptr, buf, length, data_flags)
    except BaseException as exc:
        conn.error = exc
        return NGHTTP2_ERR_CALLBACK_FAILURE
