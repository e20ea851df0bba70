/* section_screen.c - a listener's front door (SPEC §9): screen (allow and
 * deny lists, pregreet, DNSBL sites, action, cache) and limits (the
 * connection rate and the client key's prefixes). Read by
 * section_listeners.c for each listener.
 */
#include "config/config_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_SITE_WEIGHT_MAX 1000
#define CFG_DNSBL_TIMEOUT_MAX 60000
#define CFG_RATE_MAX 1000000

static const char *const actions[] = { "enforce", "drop", "ignore", NULL };

/* A number 0..255 at *p, advancing it. */
static int octet_value(const char **p, unsigned *out)
{
	unsigned v = 0;
	int digits = 0;

	while (isdigit((unsigned char)**p) && digits < 4) {
		v = v * 10 + (unsigned)(*(*p)++ - '0');
		digits++;
	}
	if (!digits || v > 255)
		return -1;
	*out = v;
	return 0;
}

/* One octet's pattern at *p: N, or [N..M;N;...] as postscreen writes it. */
static int octet_pattern(const char **p, uint8_t bits[32])
{
	unsigned lo, hi;

	if (**p != '[') {
		if (octet_value(p, &lo) < 0)
			return -1;
		bits[lo / 8] |= (uint8_t)(1u << (lo % 8));
		return 0;
	}
	(*p)++;
	for (;;) {
		if (octet_value(p, &lo) < 0)
			return -1;
		hi = lo;
		if (!strncmp(*p, "..", 2)) {
			*p += 2;
			if (octet_value(p, &hi) < 0 || hi < lo)
				return -1;
		}
		for (unsigned v = lo; v <= hi; v++)
			bits[v / 8] |= (uint8_t)(1u << (v % 8));
		if (**p == ']') {
			(*p)++;
			return 0;
		}
		if (*(*p)++ != ';')
			return -1;
	}
}

static int parse_filter(const char *f, struct cfg_dnsbl_site *out)
{
	const char *p = f;

	for (int i = 0; i < 4; i++) {
		if (i && *p++ != '.')
			return -1;
		if (octet_pattern(&p, out->filter[i]) < 0)
			return -1;
	}
	out->has_filter = true;
	return *p ? -1 : 0;
}

static bool domain_ok(const char *d, size_t n)
{
	if (!n || n > 253 || d[0] == '.' || d[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)d[i]) && d[i] != '-' && d[i] != '.' && d[i] != '_')
			return false;
	return true;
}

int config_parse_dnsbl_site(const char *s, struct cfg_dnsbl_site *out)
{
	const char *star = strrchr(s, '*'), *eq = strchr(s, '=');
	const char *end = star ? star : s + strlen(s);
	size_t dlen = (size_t)((eq && eq < end ? eq : end) - s);
	char filter[128];
	long w = 1;

	memset(out, 0, sizeof(*out));
	if (star) {
		char *e;

		if (!star[1])
			return -1;
		w = strtol(star + 1, &e, 10);
		if (*e || !w || w > CFG_SITE_WEIGHT_MAX || w < -CFG_SITE_WEIGHT_MAX)
			return -1;
	}
	if (!domain_ok(s, dlen))
		return -1;
	if (eq && eq < end) {
		size_t flen = (size_t)(end - eq - 1);

		if (flen >= sizeof(filter))
			return -1;
		memcpy(filter, eq + 1, flen);
		filter[flen] = '\0';
		if (parse_filter(filter, out) < 0)
			return -1;
	}
	out->weight = (int)w;
	out->text = strdup(s);
	out->domain = strndup(s, dlen);
	if (!out->text || !out->domain) {
		free(out->text);
		free(out->domain);
		return -1;
	}
	return 0;
}

bool config_dnsbl_match(const struct cfg_dnsbl_site *site, const uint8_t a[4])
{
	if (!site->has_filter)
		return true;
	for (int i = 0; i < 4; i++)
		if (!(site->filter[i][a[i] / 8] & (1u << (a[i] % 8))))
			return false;
	return true;
}

/* A list of CIDRs (allow, deny). */
static int cidr_list(struct ctx *c, yaml_node_t *v, const char *what, struct cfg_cidr **out,
		     size_t *n)
{
	size_t len;

	if (cfg_list(c, v, what, &len) < 0 ||
	    !(*out = cfg_calloc(c, v, len ? len : 1, sizeof(**out))))
		return -1;
	for (size_t i = 0; i < len; i++) {
		yaml_node_t *it = cfg_item(c, v, i);

		if (cfg_want(c, it, YAML_SCALAR_NODE, what) < 0)
			return -1;
		if (config_parse_cidr(cfg_scalar(it), &(*out)[i]) < 0)
			return cfg_fail(c, it, "%s: bad CIDR \"%s\"", what, cfg_scalar(it));
		(*n)++;
	}
	return 0;
}

static int sites_list(struct ctx *c, yaml_node_t *v, struct cfg_screen *s)
{
	size_t len;

	if (cfg_list(c, v, "screen.dnsbl.sites", &len) < 0 ||
	    !(s->sites = cfg_calloc(c, v, len ? len : 1, sizeof(*s->sites))))
		return -1;
	for (size_t i = 0; i < len; i++) {
		yaml_node_t *it = cfg_item(c, v, i);

		if (cfg_want(c, it, YAML_SCALAR_NODE, "screen.dnsbl.sites") < 0)
			return -1;
		if (config_parse_dnsbl_site(cfg_scalar(it), &s->sites[i]) < 0)
			return cfg_fail(
				c, it,
				"screen.dnsbl.sites: bad site \"%s\" (domain[=filter][*weight], "
				"e.g. zen.example*3 or bl.example=127.0.0.[2..4]*2; "
				"the weight a nonzero integer)",
				cfg_scalar(it));
		s->nsites++;
	}
	return 0;
}

static int dnsbl_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_screen *s = arg;
	uint32_t u;

	(void)k;
	if (!strcmp(key, "sites"))
		return sites_list(c, v, s);
	if (!strcmp(key, "threshold")) {
		if (cfg_get_u32(c, v, "screen.dnsbl.threshold", 1, 100000, &u) < 0)
			return -1;
		s->threshold = (int)u;
		return 0;
	}
	if (!strcmp(key, "timeout")) {
		if (cfg_get_duration(c, v, "screen.dnsbl.timeout", &s->dnsbl_timeout) < 0)
			return -1;
		if (!s->dnsbl_timeout || s->dnsbl_timeout > CFG_DNSBL_TIMEOUT_MAX)
			return cfg_fail(c, v, "screen.dnsbl.timeout: more than 0 and at most 60s");
		return 0;
	}
	return 1;
}

static int screen_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_screen *s = arg;
	int i;

	(void)k;
	if (!strcmp(key, "allow"))
		return cidr_list(c, v, "screen.allow", &s->allow, &s->nallow);
	if (!strcmp(key, "deny"))
		return cidr_list(c, v, "screen.deny", &s->deny, &s->ndeny);
	if (!strcmp(key, "pregreet"))
		return cfg_get_duration(c, v, "screen.pregreet", &s->pregreet);
	if (!strcmp(key, "dnsbl"))
		return cfg_read_map(c, v, "screen.dnsbl", "screen.dnsbl", dnsbl_pair, s, NULL);
	if (!strcmp(key, "action")) {
		if (cfg_get_enum(c, v, "screen.action", actions, &i) < 0)
			return -1;
		s->action = (enum cfg_screen_action)i;
		return 0;
	}
	if (!strcmp(key, "cache"))
		return cfg_get_duration(c, v, "screen.cache", &s->cache);
	return 1;
}

int cfg_screen_parse(struct ctx *c, yaml_node_t *v, struct cfg_screen *s)
{
	if (cfg_read_map(c, v, "screen", "screen", screen_pair, s, NULL) < 0)
		return -1;
	s->enabled = s->nallow || s->ndeny || s->pregreet || s->nsites;
	return cfg_refuse_unbuilt(c, v, "screen");
}

/* "60/1m": a count, a slash, a window. "0" turns the limit off. */
static int get_rate(struct ctx *c, yaml_node_t *v, struct cfg_limits *l)
{
	const char *s, *slash;
	char num[16];

	if (cfg_want(c, v, YAML_SCALAR_NODE, "limits.connection_rate") < 0)
		return -1;
	s = cfg_scalar(v);
	if (!strcmp(s, "0") || !*s) {
		l->rate_count = l->rate_window = 0;
		return 0;
	}
	slash = strchr(s, '/');
	if (!slash || (size_t)(slash - s) >= sizeof(num) || slash == s)
		goto bad;
	memcpy(num, s, (size_t)(slash - s));
	num[slash - s] = '\0';
	if (!cfg_all_digits(num) || config_parse_duration(slash + 1, &l->rate_window) < 0 ||
	    !l->rate_window)
		goto bad;
	l->rate_count = (uint32_t)strtoul(num, NULL, 10);
	if (!l->rate_count || l->rate_count > CFG_RATE_MAX)
		goto bad;
	return cfg_refuse_unbuilt(c, v, "limits.connection_rate");
bad:
	return cfg_fail(c, v,
			"limits.connection_rate: \"%s\" is not COUNT/WINDOW (e.g. \"60/1m\": 1 to "
			"%d sessions per window), or 0 for none",
			s, CFG_RATE_MAX);
}

static int limits_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_limits *l = arg;
	uint32_t u;

	(void)k;
	if (!strcmp(key, "connection_rate"))
		return get_rate(c, v, l);
	if (!strcmp(key, "ipv4_prefix")) {
		if (cfg_get_u32(c, v, "limits.ipv4_prefix", 1, 32, &u) < 0)
			return -1;
		l->ipv4_prefix = (uint8_t)u;
		return 0;
	}
	if (!strcmp(key, "ipv6_prefix")) {
		if (cfg_get_u32(c, v, "limits.ipv6_prefix", 1, 128, &u) < 0)
			return -1;
		l->ipv6_prefix = (uint8_t)u;
		return 0;
	}
	return 1;
}

int cfg_limits_parse(struct ctx *c, yaml_node_t *v, struct cfg_limits *l)
{
	return cfg_read_map(c, v, "limits", "limits", limits_pair, l, NULL);
}

void cfg_screen_defaults(struct cfg_screen *s, struct cfg_limits *l)
{
	*s = (struct cfg_screen){
		.threshold = 1, /* postscreen's postscreen_dnsbl_threshold */
		.dnsbl_timeout = 2000,
		.action = CFG_SCREEN_ENFORCE,
		.cache = 24 * 3600 * 1000u,
	};
	*l = (struct cfg_limits){ .ipv4_prefix = 32, .ipv6_prefix = 64 };
}

void cfg_screen_free(struct cfg_screen *s)
{
	free(s->allow);
	free(s->deny);
	for (size_t i = 0; i < s->nsites; i++) {
		free(s->sites[i].text);
		free(s->sites[i].domain);
	}
	free(s->sites);
}
