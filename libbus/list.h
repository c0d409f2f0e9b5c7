/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Intrusive doubly-linked lists (as in wayland's wl_list): a List head in the
 * container and a List link in each element. An unlinked element's link points
 * to itself, so list_remove() is safe to call twice.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct List {
        struct List *prev;
        struct List *next;
} List;

#define container_of(ptr, type, member) ((type *) ((char *) (ptr) - offsetof(type, member)))

static inline void list_init(List *l) {
        l->prev = l->next = l;
}

static inline bool list_is_empty(const List *l) {
        return l->next == l;
}

static inline bool list_is_linked(const List *l) {
        return l->next != l;
}

/* Inserts elem at the tail of head. */
static inline void list_append(List *head, List *elem) {
        elem->prev = head->prev;
        elem->next = head;
        head->prev->next = elem;
        head->prev = elem;
}

static inline void list_remove(List *elem) {
        elem->prev->next = elem->next;
        elem->next->prev = elem->prev;
        list_init(elem);
}

#define list_first_entry(head, type, member) container_of((head)->next, type, member)

/* Iterates; the body may remove the current element. */
#define list_for_each_safe(pos, tmp, head, member)                                        \
        for (pos = container_of((head)->next, __typeof__(*pos), member),                 \
            tmp = container_of(pos->member.next, __typeof__(*pos), member);               \
             &pos->member != (head);                                                      \
             pos = tmp, tmp = container_of(pos->member.next, __typeof__(*pos), member))

#define list_for_each(pos, head, member)                                                  \
        for (pos = container_of((head)->next, __typeof__(*pos), member);                 \
             &pos->member != (head);                                                      \
             pos = container_of(pos->member.next, __typeof__(*pos), member))
