/* config_int.h - what the parts of config/ share; nothing outside config/
 * includes it. The layers, each using only those above it:
 *
 *   value.c            pure value parsers (durations, sizes, addresses,
 *                      CIDRs): no YAML, linked alone by the bench tools
 *   node.c             the libyaml document and its nodes: the first pass,
 *                      typed reads of scalars, lists and mappings, and
 *                      cfg_fail(), which names FILE:LINE:COLUMN of a node
 *   section_server.c, section_tls.c, section_pools.c,
 *   section_listeners.c, section_alerts.c
 *                      one section each: its keys, defaults, checks, free
 *   config.c           config_load(), the sections in dependency order,
 *                      config_free()
 *
 * Every reader takes the node it reads and reports errors at it: it
 * returns 0, or -1 with the message written by cfg_fail(). A pair function
 * (cfg_pair_fn) returns 1 for a key it does not know.
 */
#ifndef MXLB_CONFIG_INT_H
#define MXLB_CONFIG_INT_H

#include <yaml.h>

#include "config/config.h"

/* At most this many errors are reported in one run; past it the loader
 * stops. One error's line is at most CFG_ERR_LINE characters. */
#define CFG_ERRORS_MAX 20
#define CFG_ERR_LINE 512

struct ctx {
	const char *file;
	const char *text; /* the file's bytes, for hints at a position */
	size_t len;
	yaml_document_t doc;
	char *err; /* the errors, one a line, no newline after the last */
	size_t errlen;
	size_t errused;
	unsigned nerr;
	bool stopped; /* CFG_ERRORS_MAX reached (or err full): read no further */
	struct config *cfg;
};

/* value.c */
extern const char *const cfg_tls_kinds[]; /* enum cfg_tls_kind, NULL-ended */
extern const char *const cfg_handoffs[];  /* enum cfg_handoff, NULL-ended */
bool cfg_all_digits(const char *s);	  /* decimal digits only: no sign, space, 0x */

/* node.c: the document */
int cfg_doc_load(struct ctx *c, const char *text, size_t len);
void cfg_doc_free(struct ctx *c);
yaml_node_t *cfg_node(struct ctx *c, int id);

/* node.c: errors and shapes. cfg_fail() adds one error (a line of
 * c->err) and returns -1; readers go on past an error where what follows
 * does not depend on it (the other keys of a mapping, the other sections),
 * so one run reports every independent mistake, in the order read. */
int cfg_fail(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The same at a FILE:LINE:COLUMN of one's own (1-based; 0 0: no position). */
void cfg_error_at(struct ctx *c, size_t line, size_t col, const char *msg);
/* Whether value (NULL: any) of key is refused as not supported yet. */
bool cfg_unbuilt(const char *key, const char *value);
const char *cfg_scalar(const yaml_node_t *n);
int cfg_want(struct ctx *c, yaml_node_t *n, yaml_node_type_t t, const char *what);
int cfg_list(struct ctx *c, yaml_node_t *n, const char *what, size_t *len);
yaml_node_t *cfg_item(struct ctx *c, yaml_node_t *seq, size_t i);
void *cfg_calloc(struct ctx *c, yaml_node_t *n, size_t count, size_t size);

/* node.c: mappings */
typedef int cfg_pair_fn(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg);
int cfg_each_pair(struct ctx *c, yaml_node_t *map, const char *section, cfg_pair_fn *fn, void *arg);
int cfg_need(struct ctx *c, yaml_node_t *map, const char *section, const char *const *keys);
int cfg_read_map(struct ctx *c, yaml_node_t *n, const char *what, const char *section,
		 cfg_pair_fn *fn, void *arg, const char *const *required);

/* node.c: scalars */
int cfg_get_str(struct ctx *c, yaml_node_t *n, const char *what, char **out);
int cfg_get_name(struct ctx *c, yaml_node_t *n, const char *what, char **out);
int cfg_get_bool(struct ctx *c, yaml_node_t *n, const char *what, bool *out);
int cfg_get_u32(struct ctx *c, yaml_node_t *n, const char *what, uint32_t min, uint32_t max,
		uint32_t *out);
int cfg_get_duration(struct ctx *c, yaml_node_t *n, const char *what, uint32_t *ms);
int cfg_get_enum(struct ctx *c, yaml_node_t *n, const char *what, const char *const *names,
		 int *out);
int cfg_refuse_unbuilt(struct ctx *c, yaml_node_t *n, const char *key);
int cfg_get_addr(struct ctx *c, yaml_node_t *n, const char *what, struct cfg_addr *out);
int cfg_addr_of(struct ctx *c, yaml_node_t *n, const char *what, struct cfg_addr *out);

/* value.c: config_parse_addr() saying what was wrong */
enum cfg_addr_err {
	CFG_ADDR_OK,
	CFG_ADDR_SYNTAX,   /* not host:port or [v6]:port */
	CFG_ADDR_BRACKETS, /* [x]:port where x is not an IPv6 address */
	CFG_ADDR_PORT,	   /* the port is not 1 to 65535 */
	CFG_ADDR_RESOLVE,  /* the host name does not resolve */
	CFG_ADDR_OFFLINE,  /* a host name, not looked up (config_set_resolver_offline) */
};
/* gai: getaddrinfo()'s error for CFG_ADDR_RESOLVE. */
enum cfg_addr_err cfg_parse_addr(const char *s, struct cfg_addr *out, int *gai);

/* The sections, read by config.c in this order. Each takes its node (NULL
 * when the section is absent) and the document's root, and fills c->cfg;
 * each free releases what its parse allocated, complete or not. */

/* section_server.c: always read, for the defaults */
int cfg_server_parse(struct ctx *c, yaml_node_t *map, yaml_node_t *root);
void cfg_server_free(struct config *cfg);

/* section_tls.c */
int cfg_tls_parse(struct ctx *c, yaml_node_t *map, yaml_node_t *root);
void cfg_tls_free(struct config *cfg);
int cfg_tls_ref(struct ctx *c, yaml_node_t *v, const char *what, struct cfg_tls **out);

/* section_pools.c */
int cfg_pools_parse(struct ctx *c, yaml_node_t *seq, yaml_node_t *root);
void cfg_pools_free(struct config *cfg);
int cfg_pool_ref(struct ctx *c, yaml_node_t *v, const char *what, struct cfg_pool **out);

/* section_listeners.c */
int cfg_listeners_parse(struct ctx *c, yaml_node_t *seq, yaml_node_t *root);
void cfg_listeners_free(struct config *cfg);

/* section_screen.c: a listener's screen and limits (SPEC §9) */
void cfg_screen_defaults(struct cfg_screen *s, struct cfg_limits *l);
int cfg_screen_parse(struct ctx *c, yaml_node_t *v, struct cfg_screen *s);
int cfg_limits_parse(struct ctx *c, yaml_node_t *v, struct cfg_limits *l);
void cfg_screen_free(struct cfg_screen *s);

/* section_alerts.c */
int cfg_alerts_parse(struct ctx *c, yaml_node_t *map, yaml_node_t *root);
void cfg_alerts_free(struct config *cfg);

#endif
