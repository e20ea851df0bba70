/* section_alerts.c - the optional alerts section: where mail about backend
 * and pool state changes goes, from whom, and for which events.
 */
#include "config/config_int.h"

#include <stdlib.h>
#include <string.h>

#define CFG_MAILBOX_MAX 254

/* An address that goes between <> in MAIL FROM / RCPT TO as it is. */
static int get_mailbox(struct ctx *c, yaml_node_t *n, const char *what, char **out)
{
	const char *s;

	if (cfg_get_str(c, n, what, out) < 0)
		return -1;
	s = *out;
	if (!*s || strlen(s) > CFG_MAILBOX_MAX || !strchr(s, '@'))
		return cfg_fail(c, n, "%s: \"%s\" is not a mail address", what, s);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == 0x7f)
			return cfg_fail(c, n, "%s: \"%s\" is not a mail address", what, s);
	return 0;
}

static int parse_to(struct ctx *c, struct cfg_alerts *a, yaml_node_t *seq)
{
	size_t n;

	if (cfg_list(c, seq, "to", &n) < 0 || !(a->to = cfg_calloc(c, seq, n, sizeof(*a->to))))
		return -1;
	for (size_t i = 0; i < n; i++) {
		a->nto++;
		if (get_mailbox(c, cfg_item(c, seq, i), "alerts.to", &a->to[i]) < 0)
			return -1;
	}
	return 0;
}

static int parse_events(struct ctx *c, struct cfg_alerts *a, yaml_node_t *seq)
{
	static const char *const events[] = { "backend_down", "backend_up", "pool_down", NULL };
	size_t n;
	int e;

	if (cfg_list(c, seq, "events", &n) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (cfg_get_enum(c, cfg_item(c, seq, i), "alerts.events", events, &e) < 0)
			return -1;
		a->events |= 1u << e;
	}
	return 0;
}

static int alerts_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_alerts *a = arg;

	(void)k;
	if (!strcmp(key, "smtp"))
		return cfg_get_addr(c, v, "alerts.smtp", &a->smtp);
	if (!strcmp(key, "from"))
		return get_mailbox(c, v, "alerts.from", &a->from);
	if (!strcmp(key, "to"))
		return parse_to(c, a, v);
	if (!strcmp(key, "events"))
		return parse_events(c, a, v);
	return 1;
}

int cfg_alerts_parse(struct ctx *c, yaml_node_t *map, yaml_node_t *root)
{
	static const char *const required[] = { "smtp", "from", "to", NULL };
	struct cfg_alerts *a = &c->cfg->alerts;

	(void)root;
	if (!map)
		return 0;
	if (cfg_read_map(c, map, "alerts", "alerts", alerts_pair, a, required) < 0)
		return -1;
	if (!a->nto)
		return cfg_fail(c, map, "alerts.to: at least one recipient is needed");
	a->enabled = true;
	if (!a->events)
		a->events = CFG_EV_BACKEND_DOWN | CFG_EV_BACKEND_UP | CFG_EV_POOL_DOWN;
	return 0;
}

void cfg_alerts_free(struct config *cfg)
{
	free(cfg->alerts.from);
	for (size_t i = 0; i < cfg->alerts.nto; i++)
		free(cfg->alerts.to[i]);
	free(cfg->alerts.to);
}
