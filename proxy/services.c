/* services.c - what runs beside the sessions, on worker 0: health checks,
 * alert mail and the admin server (whose sockets accept by themselves,
 * admin_accept). One table says how each starts, stops and lives through
 * a reload, as OpenBSD relayd's procs[] does.
 */
#include "proxy/proxy.h"

struct service {
	const char *name;
	void (*start)(struct worker *w); /* the ring runs; NULL: nothing to start */
	void (*stop)(void);		 /* the server stops: close what is open */
	/* stopped before a new runtime comes into force (runtime_adopt
	 * rewrites what it writes) and started again after */
	bool restarts_on_reload;
};

static const struct service services[] = {
	{ "health", health_start, health_stop, true },
	{ "alerts", alerts_start, alerts_stop, false },
	{ "admin", NULL, admin_stop, false },
};

#define NSERVICES (sizeof(services) / sizeof(services[0]))

void services_start(struct worker *w)
{
	for (size_t i = 0; i < NSERVICES; i++)
		if (services[i].start)
			services[i].start(w);
}

void services_stop(void)
{
	for (size_t i = 0; i < NSERVICES; i++)
		services[i].stop();
}

void services_reload(struct worker *w, struct runtime *rt)
{
	for (size_t i = 0; i < NSERVICES; i++)
		if (services[i].restarts_on_reload)
			services[i].stop();
	runtime_adopt(rt);
	for (size_t i = 0; i < NSERVICES; i++)
		if (services[i].restarts_on_reload && services[i].start)
			services[i].start(w);
}
