/* The ring of unconfirmed messages (see unconfirmed.h). */
#include "unconfirmed.h"

#include <stdlib.h>

#include "internal.h"

static cd_message *slot(const cd_unconfirmed *buffer, size_t index)
{
    return buffer->slots[(buffer->start + index) % buffer->capacity];
}

int cd_unconfirmed_push(cd_unconfirmed *buffer, cd_message *message)
{
    if (buffer->count == buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity * 2 : 1024;
        cd_message **slots = malloc(capacity * sizeof *slots);
        size_t index;
        if (slots == NULL) return -1;
        for (index = 0; index < buffer->count; index++) slots[index] = slot(buffer, index);
        free(buffer->slots);
        buffer->slots = slots;
        buffer->capacity = capacity;
        buffer->start = 0;
    }
    buffer->slots[(buffer->start + buffer->count) % buffer->capacity] = message;
    buffer->count++;
    return 0;
}

uint64_t cd_unconfirmed_first(const cd_unconfirmed *buffer)
{
    return buffer->count ? slot(buffer, 0)->seq : 0;
}

uint64_t cd_unconfirmed_last(const cd_unconfirmed *buffer)
{
    return buffer->count ? slot(buffer, buffer->count - 1)->seq : 0;
}

cd_message *cd_unconfirmed_find(const cd_unconfirmed *buffer, uint64_t seq)
{
    uint64_t first = cd_unconfirmed_first(buffer);
    if (buffer->count == 0 || seq < first || seq - first >= buffer->count) return NULL;
    return slot(buffer, (size_t)(seq - first));
}

cd_message *cd_unconfirmed_pop(cd_unconfirmed *buffer)
{
    cd_message *oldest;
    if (buffer->count == 0) return NULL;
    oldest = slot(buffer, 0);
    buffer->start = (buffer->start + 1) % buffer->capacity;
    buffer->count--;
    return oldest;
}

void cd_unconfirmed_free(cd_unconfirmed *buffer)
{
    cd_message *message;
    while ((message = cd_unconfirmed_pop(buffer)) != NULL) cd_message_free(message);
    free(buffer->slots);
    buffer->slots = NULL;
    buffer->capacity = buffer->count = buffer->start = 0;
}
