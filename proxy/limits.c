/* limits.c - per-client session counts (max_sessions_per_client), shared
 * by all workers under one lock. An entry lives while its client has a
 * session, so the table holds no more entries than there are sessions.
 */
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"

#define CLIENT_BUCKETS 4096

struct client_count {
	struct client_count *next;
	uint8_t addr[16];
	uint32_t n;
};

static struct client_count *client_table[CLIENT_BUCKETS];
static pthread_mutex_t client_lock = PTHREAD_MUTEX_INITIALIZER;

/* The address as 16 octets (v4 as v4-mapped v6), so both families key alike. */
static void client_key(const union sockaddr_any *a, uint8_t key[16])
{
	memset(key, 0, 16);
	if (a->sa.sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &a->sin.sin_addr, 4);
	} else if (a->sa.sa_family == AF_INET6) {
		memcpy(key, &a->sin6.sin6_addr, 16);
	}
}

static unsigned client_hash(const uint8_t key[16])
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;
	return h % CLIENT_BUCKETS;
}

bool client_limit_take(const union sockaddr_any *a, uint32_t limit)
{
	uint8_t key[16];
	struct client_count *cc;
	bool ok = true;

	client_key(a, key);
	pthread_mutex_lock(&client_lock);
	for (cc = client_table[client_hash(key)]; cc; cc = cc->next)
		if (!memcmp(cc->addr, key, 16))
			break;
	if (!cc) {
		cc = calloc(1, sizeof(*cc));
		if (cc) {
			memcpy(cc->addr, key, 16);
			cc->next = client_table[client_hash(key)];
			client_table[client_hash(key)] = cc;
		}
	}
	if (!cc || cc->n >= limit)
		ok = false;
	else
		cc->n++;
	pthread_mutex_unlock(&client_lock);
	return ok;
}

void client_limit_drop(const union sockaddr_any *a)
{
	uint8_t key[16];
	struct client_count **pp, *cc;

	client_key(a, key);
	pthread_mutex_lock(&client_lock);
	for (pp = &client_table[client_hash(key)]; (cc = *pp); pp = &cc->next) {
		if (memcmp(cc->addr, key, 16))
			continue;
		if (--cc->n == 0) {
			*pp = cc->next;
			free(cc);
		}
		break;
	}
	pthread_mutex_unlock(&client_lock);
}
