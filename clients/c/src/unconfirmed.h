/* The I/O thread's buffer of messages not yet confirmed by the daemon: a ring
 * of consecutive sequence numbers, oldest first, so the message numbered
 * `seq` is found by subtraction. */
#ifndef COLLECTORD_UNCONFIRMED_H
#define COLLECTORD_UNCONFIRMED_H

#include <stddef.h>
#include <stdint.h>

struct cd_message;

typedef struct cd_unconfirmed {
    struct cd_message **slots;
    size_t capacity;
    size_t start; /* slot of the oldest */
    size_t count;
} cd_unconfirmed;

/* Add the next message (its seq follows the newest held); 0, or -1 out of memory. */
int cd_unconfirmed_push(cd_unconfirmed *buffer, struct cd_message *message);
/* The message numbered `seq`, or NULL if not held. */
struct cd_message *cd_unconfirmed_find(const cd_unconfirmed *buffer, uint64_t seq);
/* Oldest and newest sequence numbers held (0 if none). */
uint64_t cd_unconfirmed_first(const cd_unconfirmed *buffer);
uint64_t cd_unconfirmed_last(const cd_unconfirmed *buffer);
/* Remove and return the oldest, or NULL. */
struct cd_message *cd_unconfirmed_pop(cd_unconfirmed *buffer);
void cd_unconfirmed_free(cd_unconfirmed *buffer);

#endif
