/* admin_page.c - the status page (SPEC §12), GET / and /status.html: in
 * the spirit of HAProxy's stats page, one table of listeners and one per
 * pool, its backends with their state, weight, sessions, checks and
 * capabilities.
 *
 * The server renders it whole, so it reads without a script, and every
 * name goes through html(), which escapes it for text and attribute
 * values alike. The script (below, as written) refreshes the page by
 * fetching it again and swapping in its #live part, keeps the admin token
 * in sessionStorage (the page never knows it), and POSTs the drain,
 * disable and enable actions with it. Nothing is loaded from elsewhere:
 * admin.c sends a policy that lets the page fetch from this server only.
 */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "proxy/proxy.h"

#define REFRESH_S 5

static const char page_style[] =
	":root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--mute:#667;--line:#d8dde3;"
	"--head:#f2f4f7;--up:#1a7f37;--down:#cf222e;--drain:#bf8700;--off:#6e7781}\n"
	"@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--mute:#8b949e;"
	"--line:#30363d;--head:#161b22;--up:#3fb950;--down:#f85149;--drain:#d29922;"
	"--off:#8b949e}}\n"
	"body{margin:0;padding:1rem 1.5rem;background:var(--bg);color:var(--fg);"
	"font:14px/1.4 system-ui,sans-serif}\n"
	"header{display:flex;flex-wrap:wrap;gap:.5rem 2rem;align-items:baseline}\n"
	"h1{font-size:1.4rem;margin:0}h2{font-size:1.1rem;margin:1.5rem 0 .25rem}\n"
	".meta,.sub,.updated{color:var(--mute)}.sub{margin:0 0 .5rem}\n"
	"table{border-collapse:collapse;width:100%}\n"
	"th,td{border:1px solid var(--line);padding:.3rem .5rem;text-align:left;"
	"vertical-align:top}\n"
	"th{background:var(--head);font-weight:600}td.n{text-align:right;"
	"font-variant-numeric:tabular-nums}\n"
	".state{font-weight:600;text-transform:uppercase;font-size:.75rem;color:#fff;"
	"padding:.05rem .45rem;border-radius:.7rem}\n"
	".state.up{background:var(--up)}.state.down{background:var(--down)}"
	".state.drain{background:var(--drain)}.state.disabled{background:var(--off)}\n"
	"tr.st-up td:first-child{border-left:4px solid var(--up)}"
	"tr.st-down td:first-child{border-left:4px solid var(--down)}"
	"tr.st-drain td:first-child{border-left:4px solid var(--drain)}"
	"tr.st-disabled td:first-child{border-left:4px solid var(--off)}\n"
	".ok{color:var(--up)}.bad,.why{color:var(--down)}\n"
	".caps{font-size:.8rem;color:var(--mute)}time{white-space:nowrap}\n"
	"button{font:inherit;font-size:.8rem;margin:0 .2rem .2rem 0}"
	"td.actions{white-space:nowrap}\n"
	"#auth input{font:inherit;width:16rem}\n"
	"#msg.bad{color:var(--down)}#msg.good{color:var(--up)}\n"
	"body.stale #live{opacity:.5}\n";

/* Kept as plain as the C around it: no build step, no library. */
static const char page_script[] =
	"'use strict';\n"
	"const KEY = 'mxlb-admin-token';\n"
	"const token = document.getElementById('token');\n"
	"const msg = document.getElementById('msg');\n"
	"const refreshed = document.getElementById('refreshed');\n"
	"\n"
	"function say(text, bad) {\n"
	"  msg.textContent = text;\n"
	"  msg.className = bad ? 'bad' : 'good';\n"
	"}\n"
	"\n"
	"/* kept for this tab only; storage a browser refuses just means typing\n"
	"   the token again */\n"
	"let store = null;\n"
	"try { store = window.sessionStorage; } catch (e) { }\n"
	"if (token && store) {\n"
	"  token.value = store.getItem(KEY) || '';\n"
	"  token.addEventListener('input', () => store.setItem(KEY, token.value));\n"
	"}\n"
	"\n"
	"/* The page again, from the server that rendered it; its #live part\n"
	"   replaces ours (the token field and messages stay). */\n"
	"async function refresh() {\n"
	"  try {\n"
	"    const r = await fetch(location.pathname, { cache: 'no-store' });\n"
	"    if (!r.ok) throw new Error('HTTP ' + r.status);\n"
	"    const doc = new DOMParser().parseFromString(await r.text(), 'text/html');\n"
	"    const fresh = doc.getElementById('live');\n"
	"    if (fresh) document.getElementById('live').replaceWith(document.adoptNode(fresh));\n"
	"    document.body.classList.remove('stale');\n"
	"    refreshed.textContent = 'live, updated ' + new Date().toLocaleTimeString();\n"
	"  } catch (e) {\n"
	"    document.body.classList.add('stale');\n"
	"    refreshed.textContent = 'not updated since ' + new Date().toLocaleTimeString();\n"
	"    say('cannot reach mxlb: ' + e.message, true);\n"
	"  }\n"
	"}\n"
	"\n"
	"async function act(button) {\n"
	"  const row = button.closest('tr[data-backend]');\n"
	"  const what = button.dataset.act + ' ' + row.dataset.pool + '/' + row.dataset.backend;\n"
	"  const headers = {};\n"
	"  if (token) {\n"
	"    if (!token.value) {\n"
	"      say('type the admin token first', true);\n"
	"      token.focus();\n"
	"      return;\n"
	"    }\n"
	"    headers.Authorization = 'Bearer ' + token.value;\n"
	"  }\n"
	"  const url = '/backends/' + encodeURIComponent(row.dataset.pool) + '/' +\n"
	"    encodeURIComponent(row.dataset.backend) + '/' + button.dataset.act;\n"
	"  /* one request per click; the answer is said once the page shows its\n"
	"     effect */\n"
	"  button.disabled = true;\n"
	"  let answer, bad = true;\n"
	"  try {\n"
	"    const r = await fetch(url, { method: 'POST', headers, cache: 'no-store' });\n"
	"    const text = (await r.text()).trim();\n"
	"    bad = !r.ok;\n"
	"    answer = r.ok ? 'done' : r.status + ' ' + (text || r.statusText);\n"
	"  } catch (e) {\n"
	"    answer = e.message;\n"
	"  }\n"
	"  await refresh();\n"
	"  button.disabled = false; /* when the refresh could not replace it */\n"
	"  say(what + ': ' + answer, bad);\n"
	"}\n"
	"\n"
	"document.addEventListener('click', (ev) => {\n"
	"  const button = ev.target.closest('button[data-act]');\n"
	"  if (button) act(button);\n"
	"});\n"
	"setInterval(refresh, REFRESH_MS);\n";

/* ---- output ---- */

static void put(struct dbuf *b, const char *s)
{
	dbuf_append(b, s, strlen(s), 64u << 20);
}

/* s as HTML text or a double-quoted attribute value. */
static void html(struct dbuf *b, const char *s)
{
	for (const char *p = s; *p; p++) {
		switch (*p) {
		case '&':
			put(b, "&amp;");
			break;
		case '<':
			put(b, "&lt;");
			break;
		case '>':
			put(b, "&gt;");
			break;
		case '"':
			put(b, "&quot;");
			break;
		case '\'':
			put(b, "&#39;");
			break;
		default:
			dbuf_append(b, p, 1, 64u << 20);
		}
	}
}

/* "3d 4h", "4h 5m", "5m 6s", "7s". */
static void out_duration(struct dbuf *b, uint64_t ms)
{
	uint64_t s = ms / 1000, m = s / 60, h = m / 60, d = h / 24;

	if (d)
		admin_out(b, "%" PRIu64 "d %" PRIu64 "h", d, h % 24);
	else if (h)
		admin_out(b, "%" PRIu64 "h %" PRIu64 "m", h, m % 60);
	else if (m)
		admin_out(b, "%" PRIu64 "m %" PRIu64 "s", m, s % 60);
	else
		admin_out(b, "%" PRIu64 "s", s);
}

/* A wall-clock time as "5s ago", the UTC time in its title. */
static void out_ago(struct dbuf *b, uint64_t ms, uint64_t now)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char iso[32] = "";

	if (gmtime_r(&t, &tm))
		strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
	admin_out(b, "<time datetime=\"%s\" title=\"%s\">", iso, iso);
	out_duration(b, now > ms ? now - ms : 0);
	put(b, " ago</time>");
}

static void out_utc(struct dbuf *b, uint64_t ms)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char s[32] = "?";

	if (gmtime_r(&t, &tm))
		strftime(s, sizeof(s), "%Y-%m-%d %H:%M:%S UTC", &tm);
	put(b, s);
}

/* ---- the parts ---- */

static void out_head(struct dbuf *b, const char *nonce)
{
	const char *host = mxlb_rt->cfg->server.hostname;

	put(b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
	       "<link rel=\"icon\" href=\"data:,\">\n");
	admin_out(b, "<noscript><meta http-equiv=\"refresh\" content=\"%d\"></noscript>\n",
		  2 * REFRESH_S);
	put(b, "<title>mxlb ");
	html(b, host);
	admin_out(b, "</title>\n<style nonce=\"%s\">\n", nonce);
	put(b, page_style);
	put(b, "</style></head>\n<body>\n");
}

/* The token field (when the server has one) and the action messages:
 * outside #live, so a refresh keeps what was typed and said. */
static void out_header(struct dbuf *b, const struct admin_access *acc)
{
	put(b, "<header><h1>mxlb <span id=\"host\">");
	html(b, mxlb_rt->cfg->server.hostname);
	put(b, "</span></h1>\n<div id=\"auth\">");
	if (acc->token)
		put(b, "<label>Admin token <input id=\"token\" type=\"password\" "
		       "autocomplete=\"off\" spellcheck=\"false\"></label> ");
	else if (!acc->actions)
		put(b,
		    "<span class=\"meta\">Actions need <code>server.admin.token</code>.</span> ");
	put(b, "<output id=\"msg\" role=\"status\"></output></div>"
	       "<span id=\"refreshed\" class=\"meta\"></span></header>\n");
}

static void out_process(struct dbuf *b, uint64_t now)
{
	put(b, "<p class=\"meta\">version " MXLB_VERSION " &middot; up ");
	out_duration(b, stats_uptime_ms());
	put(b, " (since ");
	out_utc(b, stats_start_ms());
	put(b, ") &middot; configuration loaded ");
	out_ago(b, stats_config_loaded_ms(), now);
	admin_out(b, " &middot; %u sessions open</p>\n", atomic_load(&mxlb_sessions));
}

static void out_listeners(struct dbuf *b)
{
	const struct runtime *rt = mxlb_rt;

	put(b, "<section id=\"listeners\"><h2>Listeners</h2>\n<table><thead><tr>"
	       "<th>Listener</th><th>Addresses</th><th>Pool</th><th>Active</th><th>Total</th>"
	       "<th>Refused</th></tr></thead><tbody>\n");
	for (size_t i = 0; i < rt->cfg->nlisteners; i++) {
		const struct cfg_listener *l = &rt->cfg->listeners[i];
		const struct listener_stats *st = rt->lstats[i];

		put(b, "<tr class=\"listener\" data-listener=\"");
		html(b, l->name);
		put(b, "\"><td>");
		html(b, l->name);
		put(b, "</td><td>");
		for (size_t k = 0; k < l->nlisten; k++) {
			put(b, k ? "<br>" : "");
			html(b, l->listen[k].text);
		}
		put(b, "</td><td>");
		html(b, l->pool->name);
		admin_out(b,
			  "</td><td class=\"n\">%u</td><td class=\"n\">%" PRIu64
			  "</td><td class=\"n\">%" PRIu64 "</td></tr>\n",
			  atomic_load(&st->active), listener_stats_total(st),
			  listener_stats_refused(st));
	}
	put(b, "</tbody></table></section>\n");
}

/* The last check and, when it failed, why. */
static void out_check(struct dbuf *b, struct backend_rt *be, const struct cfg_pool *p, uint64_t now)
{
	uint64_t last = atomic_load(&be->last_check_ms);

	put(b, "<td class=\"check\">");
	if (p->health.check == CFG_CHECK_NONE) {
		put(b, "<span class=\"meta\">no checks</span>");
	} else if (!last) {
		put(b, "<span class=\"meta\">none yet</span>");
	} else if (atomic_load(&be->last_check_ok)) {
		put(b, "<span class=\"ok\">ok</span> ");
		out_ago(b, last, now);
	} else {
		put(b, "<span class=\"bad\">failed</span> ");
		out_ago(b, last, now);
		put(b, "<br><span class=\"why\">");
		html(b, be->last_failure);
		put(b, "</span>");
	}
	put(b, "</td><td class=\"failure\">");
	if (atomic_load(&be->last_failure_ms)) {
		html(b, be->last_failure);
		put(b, "<br>");
		out_ago(b, atomic_load(&be->last_failure_ms), now);
	} else {
		put(b, "&ndash;");
	}
	put(b, "</td>");
}

static void out_buttons(struct dbuf *b, int admin)
{
	static const struct {
		int state;
		const char *act, *label;
	} acts[] = {
		{ ADMIN_DRAIN, "drain", "Drain" },
		{ ADMIN_DISABLED, "disable", "Disable" },
		{ ADMIN_ENABLED, "enable", "Enable" },
	};

	put(b, "<td class=\"actions\">");
	for (size_t k = 0; k < sizeof(acts) / sizeof(acts[0]); k++)
		admin_out(b, "<button type=\"button\" data-act=\"%s\"%s>%s</button>", acts[k].act,
			  admin == acts[k].state ? " disabled" : "", acts[k].label);
	put(b, "</td>");
}

static void out_backend(struct dbuf *b, const struct pool_rt *p, const struct pool_backend *pb,
			const struct admin_access *acc, uint64_t now)
{
	struct backend_rt *be = pb->st;
	const char *state = admin_backend_state(be);
	unsigned caps = atomic_load(&be->caps);
	uint64_t changed = atomic_load(&be->state_change_ms);
	const char *sep = "";

	admin_out(b, "<tr class=\"backend st-%s\" data-pool=\"", state);
	html(b, p->cfg->name);
	put(b, "\" data-backend=\"");
	html(b, pb->cfg->name);
	put(b, "\"><td class=\"name\">");
	html(b, pb->cfg->name);
	put(b, "</td><td>");
	html(b, pb->cfg->address.text);
	admin_out(b,
		  "</td><td><span class=\"state %s\">%s</span>%s</td><td class=\"n\">%u</td>"
		  "<td class=\"n\">%u</td><td class=\"n\">%lu</td><td class=\"n idle\">%u</td>",
		  state, state, pb->cfg->backup ? " <span class=\"meta\">backup</span>" : "",
		  backend_weight(be), atomic_load(&be->active), atomic_load(&be->total),
		  atomic_load(&be->idle));
	out_check(b, be, p->cfg, now);
	put(b, "<td class=\"since\">");
	if (changed)
		out_ago(b, changed, now);
	else
		put(b, "<span class=\"meta\">since start</span>");
	put(b, "</td><td class=\"caps\">");
	for (size_t k = 0; k < admin_ncaps; k++)
		if (caps & admin_caps[k].bit) {
			admin_out(b, "%s%s", sep, admin_caps[k].name);
			sep = " ";
		}
	put(b, "</td>");
	if (acc->actions)
		out_buttons(b, atomic_load(&be->admin));
	put(b, "</tr>\n");
}

static void out_pool(struct dbuf *b, const struct pool_rt *p, const struct admin_access *acc,
		     uint64_t now)
{
	static const char *const checks[] = {
		[CFG_CHECK_SMTP] = "smtp", [CFG_CHECK_TCP] = "tcp", [CFG_CHECK_NONE] = "none"
	};

	put(b, "<section class=\"pool\" data-pool=\"");
	html(b, p->cfg->name);
	put(b, "\"><h2>Pool ");
	html(b, p->cfg->name);
	admin_out(b, "</h2>\n<p class=\"sub\">balance %s &middot; health check %s</p>\n",
		  p->lb->name, checks[p->cfg->health.check]);
	put(b, "<table><thead><tr><th>Backend</th><th>Address</th><th>State</th><th>Weight</th>"
	       "<th>Active</th><th>Total</th><th>Idle</th><th>Last check</th>"
	       "<th>Last failure</th><th>Up/down since</th><th>Capabilities</th>");
	if (acc->actions)
		put(b, "<th>Actions</th>");
	put(b, "</tr></thead><tbody>\n");
	for (size_t j = 0; j < p->nbackends; j++)
		out_backend(b, p, &p->backends[j], acc, now);
	put(b, "</tbody></table></section>\n");
}

void admin_render_page(struct dbuf *b, const struct admin_access *acc, const char *nonce)
{
	const struct runtime *rt = mxlb_rt;
	uint64_t now = stats_wall_ms();

	out_head(b, nonce);
	out_header(b, acc);
	put(b, "<main id=\"live\">\n");
	out_process(b, now);
	out_listeners(b);
	for (size_t i = 0; i < rt->cfg->npools; i++)
		out_pool(b, &rt->pools[i], acc, now);
	put(b, "<p class=\"updated\">Rendered ");
	out_utc(b, now);
	admin_out(b, "; refreshed every %d s.</p>\n</main>\n", REFRESH_S);
	admin_out(b, "<script nonce=\"%s\">\nconst REFRESH_MS = %d;\n", nonce, REFRESH_S * 1000);
	put(b, page_script);
	put(b, "</script>\n</body></html>\n");
}
