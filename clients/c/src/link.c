/* The I/O thread: it alone touches the client's ZeroMQ sockets.
 *
 * Publishing calls queue messages in the outbox and wake this thread if it
 * sleeps. This thread
 *  - waits for the daemon's subscription (XPUB, verbose) before publishing, so
 *    the slow joiner loses nothing, and uses XPUB_NODROP, so a full queue
 *    delays messages instead of dropping them;
 *  - keeps every message until the daemon confirms it (`received` in the
 *    replies to hello and sync), resends from a `resend` notice's `from`, and
 *    after a new subscription (the daemon restarted) says hello again with
 *    `confirmed` and resends what the daemon lacks;
 *  - sends consecutive messages as batches, a block alone with its rows as
 *    a third frame;
 *  - carries the callers' requests on the DEALER (routing id = session) and
 *    answers `barrier` notices with `sent`.
 * The semantics follow docs/protocol.md and collectord/link.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "internal.h"

#define ACK_INTERVAL_MS 250  /* how often unconfirmed messages prompt a sync */
#define STALL_TIMEOUT_MS 2000 /* no progress for this long: resend unconfirmed */
#define HELLO_RETRY_MS 2000  /* an unanswered hello is sent again */
#define BATCH_MESSAGES 512
#define BATCH_BYTES (256 * 1024)

static int send_frames(void *socket, const void *const *frames, const size_t *sizes, int count)
{
    int index;
    for (index = 0; index < count; index++) {
        int flags = ZMQ_DONTWAIT | (index + 1 < count ? ZMQ_SNDMORE : 0);
        if (zmq_send(socket, frames[index], sizes[index], flags) < 0) return -1;
    }
    return 0;
}

/* Send a request; return its id (0 if it could not be queued). */
static uint64_t send_request(collectord_client *c, const char *command, const char *fields,
                             size_t fields_size, uint32_t field_count)
{
    msgpack_sbuffer buffer;
    msgpack_packer packer;
    uint64_t id = ++c->link.next_id;
    const void *frames[2];
    size_t sizes[2];
    int failed;
    msgpack_sbuffer_init(&buffer);
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
    msgpack_pack_map(&packer, 3 + field_count);
    cd_pack_cstr(&packer, "v");
    msgpack_pack_uint64(&packer, CD_PROTOCOL);
    cd_pack_cstr(&packer, "cmd");
    cd_pack_cstr(&packer, command);
    cd_pack_cstr(&packer, "id");
    msgpack_pack_uint64(&packer, id);
    if (fields_size) msgpack_sbuffer_write(&buffer, fields, fields_size);
    frames[0] = "";
    sizes[0] = 0;
    frames[1] = buffer.data;
    sizes[1] = buffer.size;
    failed = send_frames(c->dealer, frames, sizes, 2);
    msgpack_sbuffer_destroy(&buffer);
    return failed ? 0 : id;
}

/* A request of the link's own: fields given as session plus up to two ints. */
static uint64_t send_own(collectord_client *c, const char *command, const char *key1,
                         uint64_t value1, const char *key2, uint64_t value2)
{
    msgpack_sbuffer buffer;
    msgpack_packer packer;
    uint64_t id;
    uint32_t count = 1;
    msgpack_sbuffer_init(&buffer);
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
    cd_pack_cstr(&packer, "session");
    cd_pack_cstr(&packer, c->session);
    if (key1 != NULL) {
        cd_pack_cstr(&packer, key1);
        msgpack_pack_uint64(&packer, value1);
        count++;
    }
    if (key2 != NULL) {
        cd_pack_cstr(&packer, key2);
        msgpack_pack_uint64(&packer, value2);
        count++;
    }
    id = send_request(c, command, buffer.data, buffer.size, count);
    msgpack_sbuffer_destroy(&buffer);
    return id;
}

static void send_hello(collectord_client *c)
{
    msgpack_sbuffer buffer;
    msgpack_packer packer;
    msgpack_sbuffer_init(&buffer);
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&buffer, c->hello_fields, c->hello_size);
    cd_pack_cstr(&packer, "session");
    cd_pack_cstr(&packer, c->session);
    cd_pack_cstr(&packer, "confirmed");
    msgpack_pack_uint64(&packer, c->link.acked);
    c->link.hello_id = send_request(c, "hello", buffer.data, buffer.size, c->hello_count + 2);
    c->link.hello_at = cd_now_ms();
    msgpack_sbuffer_destroy(&buffer);
}

/* Publish the link's counters for callers. */
static void share_counts(collectord_client *c)
{
    cd_mutex_lock(&c->lock);
    c->acked = c->link.acked;
    c->held = c->link.unacked.count;
    c->overflowed = c->link.overflowed;
    cd_mutex_unlock(&c->lock);
}

static void confirmed(collectord_client *c, uint64_t received)
{
    cd_message *message;
    if (received > c->link.acked) {
        c->link.acked = received;
        c->link.stalled_since = 0;
    }
    while (c->link.unacked.count && cd_unconfirmed_first(&c->link.unacked) <= c->link.acked) {
        message = cd_unconfirmed_pop(&c->link.unacked);
        cd_message_free(message);
    }
    if (c->link.sent < c->link.acked) c->link.sent = c->link.acked;
    share_counts(c);
}

static void check_stall(collectord_client *c)
{
    int64_t now = cd_now_ms();
    if (c->link.sent <= c->link.acked) {
        c->link.stalled_since = 0;
    } else if (c->link.stalled_since == 0) {
        c->link.stalled_since = now;
    } else if (now - c->link.stalled_since > STALL_TIMEOUT_MS) {
        c->link.sent = c->link.acked; /* the daemon normally asks with `resend` */
        c->link.stalled_since = 0;
    }
}

static void pack_header(collectord_client *c, msgpack_packer *packer, const char *kind,
                        uint64_t seq, uint32_t extra)
{
    msgpack_pack_map(packer, 6 + extra);
    cd_pack_cstr(packer, "v");
    msgpack_pack_uint64(packer, CD_PROTOCOL);
    cd_pack_cstr(packer, "kind");
    cd_pack_cstr(packer, kind);
    cd_pack_cstr(packer, "source");
    cd_pack_cstr(packer, c->name);
    cd_pack_cstr(packer, "session");
    cd_pack_cstr(packer, c->session);
    cd_pack_cstr(packer, "seq");
    msgpack_pack_uint64(packer, seq);
    cd_pack_cstr(packer, "resends");
    msgpack_pack_true(packer);
}

/* Whether `message` with `header` exceeds the daemon's limit for one message. */
static int too_large(const collectord_client *c, const msgpack_sbuffer *header,
                     const cd_message *message)
{
    return header->size + message->body_size + message->rows_size > c->link.max_message_bytes;
}

/* Send the messages from `first` on that go together; return the last sent,
 * or 0 if the data socket is full. */
static uint64_t send_from(collectord_client *c, uint64_t first)
{
    cd_message *message = cd_unconfirmed_find(&c->link.unacked, first);
    uint64_t last = cd_unconfirmed_last(&c->link.unacked);
    uint64_t budget = c->body_limit < BATCH_BYTES ? c->body_limit : BATCH_BYTES;
    msgpack_sbuffer header, payload;
    msgpack_packer packer;
    const void *frames[3];
    size_t sizes[3];
    uint64_t seq = first, count = 1;
    int failed;
    msgpack_sbuffer_init(&header);
    msgpack_packer_init(&packer, &header, msgpack_sbuffer_write);
    if (message->kind == CD_BLOCK) {
        pack_header(c, &packer, "block", first, 0);
        frames[0] = header.data;
        sizes[0] = header.size;
        frames[1] = message->body;
        sizes[1] = message->body_size;
        frames[2] = message->rows;
        sizes[2] = message->rows_size;
        /* Queued before the daemon told us a smaller limit: sent whole, it would
         * make ZeroMQ cut the connection, again at every resend; sent as its
         * header alone, the daemon rejects it and counts it. */
        failed = send_frames(c->pub, frames, sizes, too_large(c, &header, message) ? 1 : 3);
        msgpack_sbuffer_destroy(&header);
        return failed ? 0 : first;
    }
    /* How many consecutive messages (not blocks) go in one batch. */
    {
        size_t bytes = message->body_size;
        while (seq < last && count < BATCH_MESSAGES) {
            cd_message *next = cd_unconfirmed_find(&c->link.unacked, seq + 1);
            if (next->kind == CD_BLOCK || bytes + next->body_size > budget) break;
            bytes += next->body_size;
            seq++;
            count++;
        }
    }
    if (count == 1) {
        pack_header(c, &packer, cd_kind_name(message->kind), first, 0);
        frames[1] = message->body;
        sizes[1] = too_large(c, &header, message) ? 0 : message->body_size; /* as above */
        msgpack_sbuffer_init(&payload);
    } else {
        uint64_t at;
        pack_header(c, &packer, "batch", first, 1);
        cd_pack_cstr(&packer, "kinds");
        msgpack_pack_array(&packer, (size_t)count);
        msgpack_sbuffer_init(&payload);
        for (at = first; at <= seq; at++) {
            cd_message *member = cd_unconfirmed_find(&c->link.unacked, at);
            cd_pack_cstr(&packer, cd_kind_name(member->kind));
            msgpack_sbuffer_write(&payload, member->body, member->body_size);
        }
        frames[1] = payload.data;
        sizes[1] = payload.size;
    }
    frames[0] = header.data;
    sizes[0] = header.size;
    failed = send_frames(c->pub, frames, sizes, 2);
    msgpack_sbuffer_destroy(&header);
    msgpack_sbuffer_destroy(&payload);
    return failed ? 0 : seq;
}

/* Move new messages into the unconfirmed buffer and send what the daemon lacks. */
static void pump(collectord_client *c)
{
    cd_message *taken, *next;
    uint64_t first;
    cd_mutex_lock(&c->lock);
    taken = c->outbox_head;
    c->outbox_head = c->outbox_tail = NULL;
    c->held += c->outbox_count; /* still counted while they move to the buffer */
    c->outbox_count = 0;
    cd_mutex_unlock(&c->lock);
    for (; taken != NULL; taken = next) {
        next = taken->next;
        taken->next = NULL;
        if (cd_unconfirmed_push(&c->link.unacked, taken) != 0) {
            /* Out of memory: the message is lost like an overflowed one. */
            c->link.overflowed++;
            c->link.dropped_upto = taken->seq;
            cd_message_free(taken);
        }
    }
    while (c->link.unacked.count > c->buffer_limit) {
        cd_message *oldest = cd_unconfirmed_pop(&c->link.unacked);
        c->link.overflowed++;
        c->link.dropped_upto = oldest->seq;
        cd_message_free(oldest);
    }
    share_counts(c);
    if (!(c->link.subscribed && c->link.introduced)) return;
    if (c->link.dropped_upto > c->link.dropped_reported && c->link.dropped_upto > c->link.acked) {
        /* Tell the daemon not to wait for what we no longer have. */
        send_own(c, "dropped", "upto", c->link.dropped_upto, NULL, 0);
        c->link.dropped_reported = c->link.dropped_upto;
    }
    for (;;) {
        uint64_t sent;
        first = c->link.sent + 1;
        if (c->link.unacked.count == 0 || first > cd_unconfirmed_last(&c->link.unacked)) return;
        if (first < cd_unconfirmed_first(&c->link.unacked))
            first = cd_unconfirmed_first(&c->link.unacked); /* dropped ones are gone */
        sent = send_from(c, first);
        if (sent == 0) return; /* the data socket is full: retry soon */
        c->link.sent = sent;
    }
}

/* Send the requests that wait for room in the control socket's queue, in
 * order (it fills while the daemon is away: 1000 requests). One whose caller
 * gave up meanwhile is dropped unsent: a `stop` its caller was told timed out
 * must not end an experiment when the daemon comes. */
static void send_unsent(collectord_client *c)
{
    cd_request *request;
    while ((request = c->link.unsent_head) != NULL) {
        int abandoned;
        cd_mutex_lock(&c->lock);
        abandoned = request->abandoned;
        cd_mutex_unlock(&c->lock);
        if (!abandoned) {
            request->id = send_request(c, request->command, request->fields,
                                       request->fields_size, request->field_count);
            if (request->id == 0) return; /* still full: tried again at the next turn */
        }
        c->link.unsent_head = request->next;
        if (c->link.unsent_head == NULL) c->link.unsent_tail = NULL;
        request->next = NULL;
        if (abandoned) {
            cd_request_free(request);
        } else {
            request->next = c->link.pending;
            c->link.pending = request;
        }
    }
}

/* The callers' new requests join the end of the unsent ones, and go out as
 * the queue takes them. */
static void take_requests(collectord_client *c)
{
    cd_request *request;
    cd_mutex_lock(&c->lock);
    request = c->requests_head;
    c->requests_head = c->requests_tail = NULL;
    cd_mutex_unlock(&c->lock);
    if (request != NULL) {
        if (c->link.unsent_tail) c->link.unsent_tail->next = request;
        else c->link.unsent_head = request;
        while (request->next != NULL) request = request->next;
        c->link.unsent_tail = request;
    }
    send_unsent(c);
}

/* Hand a request's outcome to the caller waiting for it (or free it if none waits). */
static void finish_request(collectord_client *c, cd_request *request)
{
    cd_mutex_lock(&c->lock);
    request->done = 1;
    if (request->abandoned) {
        cd_mutex_unlock(&c->lock);
        cd_request_free(request);
        return;
    }
    cd_cond_broadcast(&c->answered);
    cd_mutex_unlock(&c->lock);
}

/* After a (re)introduction: repeat requests a restarted daemon may never have
 * seen. They go before the unsent ones, which were made after them. */
static void resend_pending(collectord_client *c)
{
    cd_request **link = &c->link.pending, *again = NULL, *request;
    while ((request = *link) != NULL) {
        if (request->idempotent == 1
            || (request->idempotent == CD_IF_STOP_IDS && c->link.stop_ids)) {
            *link = request->next;
            request->next = again; /* `pending` is newest first: this restores the order */
            again = request;
        } else {
            link = &request->next;
        }
    }
    if (again != NULL) {
        for (request = again; request->next != NULL; request = request->next) continue;
        request->next = c->link.unsent_head;
        if (c->link.unsent_head == NULL) c->link.unsent_tail = request;
        c->link.unsent_head = again;
    }
    c->link.ack_id = 0;
    send_unsent(c);
}

static void on_reply(collectord_client *c, const msgpack_object *message)
{
    uint64_t id = cd_map_uint(message, "id", 0);
    const msgpack_object *ok = cd_map_get(message, "ok");
    int success = ok != NULL && ok->type == MSGPACK_OBJECT_BOOLEAN && ok->via.boolean;
    const msgpack_object *result = success ? cd_map_get(message, "result") : NULL;
    cd_request **link, *request;
    if (result != NULL && result->type != MSGPACK_OBJECT_MAP) result = NULL;
    if (id == 0) return;
    if (id == c->link.hello_id) {
        c->link.hello_id = 0;
        if (result != NULL) {
            uint64_t limit = cd_map_uint(result, "max_message_bytes", c->link.max_message_bytes);
            const msgpack_object *stop_ids;
            confirmed(c, cd_map_uint(result, "received", 0));
            /* What went before this introduction may have died with the previous
             * daemon: send everything unconfirmed again (duplicates are dropped). */
            c->link.sent = c->link.acked;
            c->link.dropped_reported = 0;
            c->link.max_message_bytes = limit;
            stop_ids = cd_map_get(result, "stop_ids");
            c->link.stop_ids = stop_ids != NULL && stop_ids->type == MSGPACK_OBJECT_BOOLEAN
                               && stop_ids->via.boolean;
            cd_mutex_lock(&c->lock);
            c->body_limit = limit > 1024 ? limit - 1024 : 0;
            cd_mutex_unlock(&c->lock);
            c->link.introduced = 1;
            resend_pending(c);
        }
        return;
    }
    if (id == c->link.ack_id) {
        c->link.ack_id = 0;
        if (result != NULL) {
            confirmed(c, cd_map_uint(result, "received", 0));
            check_stall(c);
        }
        return;
    }
    for (link = &c->link.pending; *link != NULL; link = &(*link)->next)
        if ((*link)->id == id) break;
    if (*link == NULL) return; /* a reply to the link's own dropped / sent, or stale */
    request = *link;
    *link = request->next;
    request->next = NULL;
    if (success && result != NULL) {
        msgpack_sbuffer buffer;
        msgpack_packer packer;
        if (strcmp(request->command, "sync") == 0) confirmed(c, cd_map_uint(result, "received", 0));
        msgpack_sbuffer_init(&buffer);
        msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
        msgpack_pack_object(&packer, *result);
        request->result_size = buffer.size;
        request->result = msgpack_sbuffer_release(&buffer);
        request->code = COLLECTORD_OK;
    } else {
        const msgpack_object *error = cd_map_get(message, "error");
        const msgpack_object *code = cd_map_get(error, "code");
        const msgpack_object *text = cd_map_get(error, "message");
        request->code = COLLECTORD_E_REFUSED;
        snprintf(request->error, sizeof request->error, "the daemon refused '%s': %.*s: %.*s",
                 request->command,
                 code && code->type == MSGPACK_OBJECT_STR ? (int)code->via.str.size : 7,
                 code && code->type == MSGPACK_OBJECT_STR ? code->via.str.ptr : "unknown",
                 text && text->type == MSGPACK_OBJECT_STR ? (int)text->via.str.size : 0,
                 text && text->type == MSGPACK_OBJECT_STR ? text->via.str.ptr : "");
    }
    finish_request(c, request);
}

static void on_notice(collectord_client *c, const msgpack_object *message)
{
    const msgpack_object *kind = cd_map_get(message, "notice");
    if (kind == NULL || kind->type != MSGPACK_OBJECT_STR) return;
    if (kind->via.str.size == 7 && memcmp(kind->via.str.ptr, "barrier", 7) == 0) {
        uint64_t seq;
        pump(c);
        cd_mutex_lock(&c->lock);
        seq = c->seq; /* the last number given out: at least the last sent */
        cd_mutex_unlock(&c->lock);
        send_own(c, "sent", "seq", seq, "barrier", cd_map_uint(message, "barrier", 0));
    } else if (kind->via.str.size == 6 && memcmp(kind->via.str.ptr, "resend", 6) == 0) {
        uint64_t from = cd_map_uint(message, "from", 0);
        if (from >= 1 && from - 1 < c->link.sent)
            c->link.sent = from - 1 > c->link.acked ? from - 1 : c->link.acked;
    }
}

/* The last frame of the next multipart message on `socket`, in `frame`; 0 if none waits. */
static int receive_last(void *socket, zmq_msg_t *frame)
{
    int more = 1;
    size_t more_size = sizeof more;
    if (zmq_msg_recv(frame, socket, ZMQ_DONTWAIT) < 0) return 0;
    for (;;) {
        zmq_getsockopt(socket, ZMQ_RCVMORE, &more, &more_size);
        if (!more) return 1;
        zmq_msg_close(frame);
        zmq_msg_init(frame);
        if (zmq_msg_recv(frame, socket, 0) < 0) return 0;
    }
}

static void on_control(collectord_client *c)
{
    zmq_msg_t frame;
    for (;;) {
        msgpack_unpacked unpacked;
        size_t offset = 0;
        zmq_msg_init(&frame);
        if (!receive_last(c->dealer, &frame)) {
            zmq_msg_close(&frame);
            return;
        }
        msgpack_unpacked_init(&unpacked);
        if (msgpack_unpack_next(&unpacked, zmq_msg_data(&frame), zmq_msg_size(&frame), &offset)
                == MSGPACK_UNPACK_SUCCESS
            && unpacked.data.type == MSGPACK_OBJECT_MAP) {
            if (cd_map_get(&unpacked.data, "notice") != NULL) on_notice(c, &unpacked.data);
            else on_reply(c, &unpacked.data);
        }
        msgpack_unpacked_destroy(&unpacked);
        zmq_msg_close(&frame);
    }
}

static void on_subscription(collectord_client *c)
{
    zmq_msg_t frame;
    for (;;) {
        unsigned char event;
        zmq_msg_init(&frame);
        if (!receive_last(c->pub, &frame)) {
            zmq_msg_close(&frame);
            return;
        }
        event = zmq_msg_size(&frame) ? *(unsigned char *)zmq_msg_data(&frame) : 0xFF;
        zmq_msg_close(&frame);
        if (event == 1) {
            /* A new subscription: the daemon (re)started. Introduce ourselves to
             * it, even if a hello to an earlier one went unanswered. */
            c->link.subscribed = 1;
            c->link.introduced = 0;
            send_hello(c);
        } else if (event == 0) {
            c->link.subscribed = 0;
            c->link.introduced = 0;
        }
    }
}

static void ask_progress(collectord_client *c)
{
    int64_t now = cd_now_ms();
    if (!c->link.unacked.count || c->link.ack_id != 0 || !c->link.introduced) return;
    if (now - c->link.ack_at < ACK_INTERVAL_MS) return;
    c->link.ack_at = now;
    c->link.ack_id = send_own(c, "sync", "seq", 0, NULL, 0);
}

/* A hello the daemon never answered (it died first, or the DEALER's queue was
 * full) is sent again. */
static void retry_hello(collectord_client *c)
{
    if (!c->link.introduced && (c->link.hello_id != 0 || c->link.subscribed)
        && cd_now_ms() - c->link.hello_at > HELLO_RETRY_MS)
        send_hello(c);
}

/* How long to poll: 0 if callers queued something, else until the next duty. */
static long poll_timeout(collectord_client *c)
{
    int waiting;
    cd_mutex_lock(&c->lock);
    waiting = c->outbox_head != NULL || c->requests_head != NULL || c->finishing;
    c->sleeping = !waiting;
    cd_mutex_unlock(&c->lock);
    if (waiting) return 0;
    if (c->link.subscribed && c->link.introduced
        && cd_unconfirmed_last(&c->link.unacked) > c->link.sent)
        return 1; /* the data socket was full: try again soon */
    return c->link.unacked.count || c->link.pending || c->link.unsent_head ? 50 : 200;
}

void cd_wake(collectord_client *c)
{
    if (c->sleeping) {
        c->sleeping = 0;
        zmq_send(c->wake_tx, "", 0, ZMQ_DONTWAIT); /* already pending if this fails */
    }
}

void cd_link_run(void *raw)
{
    collectord_client *c = raw;
    zmq_pollitem_t items[3];
    cd_request *request;
    items[0].socket = c->wake_rx;
    items[1].socket = c->pub;
    items[2].socket = c->dealer;
    items[0].events = items[1].events = items[2].events = ZMQ_POLLIN;
    items[0].fd = items[1].fd = items[2].fd = 0;
    send_hello(c);
    for (;;) {
        int finishing;
        items[0].revents = items[1].revents = items[2].revents = 0;
        zmq_poll(items, 3, poll_timeout(c));
        if (items[0].revents & ZMQ_POLLIN) {
            char drain[1];
            while (zmq_recv(c->wake_rx, drain, sizeof drain, ZMQ_DONTWAIT) >= 0) continue;
        }
        if (items[1].revents & ZMQ_POLLIN) on_subscription(c);
        if (items[2].revents & ZMQ_POLLIN) on_control(c);
        take_requests(c);
        pump(c);
        ask_progress(c);
        retry_hello(c);
        cd_mutex_lock(&c->lock);
        finishing = c->finishing;
        cd_mutex_unlock(&c->lock);
        if (finishing) break;
    }
    /* Whoever still waits learns that the client closed. */
    take_requests(c);
    if (c->link.unsent_tail != NULL) {
        c->link.unsent_tail->next = c->link.pending;
        c->link.pending = c->link.unsent_head;
        c->link.unsent_head = c->link.unsent_tail = NULL;
    }
    while ((request = c->link.pending) != NULL) {
        c->link.pending = request->next;
        request->code = COLLECTORD_E_CLOSED;
        snprintf(request->error, sizeof request->error,
                 "the client closed before the daemon answered '%s'", request->command);
        finish_request(c, request);
    }
    zmq_close(c->pub);
    zmq_close(c->dealer);
    zmq_close(c->wake_rx);
    c->pub = c->dealer = c->wake_rx = NULL;
}
