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

struct ctx {
	const char *file;
	yaml_document_t doc;
	char *err;
	size_t errlen;
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

/* node.c: errors and shapes */
int cfg_fail(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
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
