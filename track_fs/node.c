/* Per-file state: one tf_node per inode that an operation is working on or
 * that is open, in a hash table with a lock per bucket. The bucket lock is
 * held only to find, create or drop a node; the node's own lock orders the
 * operations that change the file's blocks or links, so writers of
 * different files never wait for each other. */
#include <stdlib.h>

#include "internal.h"

#define TF_BUCKETS 256 /* power of two */

static struct bucket {
    pthread_mutex_t lock;
    tf_node *head;
} buckets[TF_BUCKETS];

static pthread_once_t buckets_once = PTHREAD_ONCE_INIT;

static void buckets_init(void)
{
    for (unsigned i = 0; i < TF_BUCKETS; i++)
        pthread_mutex_init(&buckets[i].lock, NULL);
}

static struct bucket *bucket_of(ino_t ino)
{
    uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull; /* Fibonacci hashing */
    return &buckets[(h >> 32) & (TF_BUCKETS - 1)];
}

tf_node *tf_node_get(ino_t ino)
{
    pthread_once(&buckets_once, buckets_init);
    struct bucket *b = bucket_of(ino);
    pthread_mutex_lock(&b->lock);
    tf_node *n = b->head;
    while (n && n->ino != ino)
        n = n->next;
    if (!n) {
        n = calloc(1, sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&b->lock);
            return NULL;
        }
        n->ino = ino;
        pthread_mutex_init(&n->lock, NULL);
        n->next = b->head;
        b->head = n;
    }
    n->refs++;
    pthread_mutex_unlock(&b->lock);
    return n;
}

void tf_node_put(tf_node *n)
{
    struct bucket *b = bucket_of(n->ino);
    pthread_mutex_lock(&b->lock);
    if (--n->refs == 0) {
        tf_node **pp = &b->head;
        while (*pp != n)
            pp = &(*pp)->next;
        *pp = n->next;
        pthread_mutex_destroy(&n->lock);
        free(n);
    }
    pthread_mutex_unlock(&b->lock);
}
