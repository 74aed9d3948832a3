/* SPDX-License-Identifier: MIT */
/*
 * Several devices in one context: the context's device list, the links
 * between devices and their pagemap owner groups (include/ugpu/fabric.h,
 * docs/multi-device.md).
 *
 * Two devices are on one fabric when both have the fabric capability and the
 * same non-zero FABRIC_UID (node ids repeat across fabrics); the link between
 * them is what the first one's FABRIC_PEERS / FABRIC_FAST registers say of
 * the other's node. The identity fields read here are set at open and
 * read-only after; whether a device is removed is an atomic flag. So the
 * only lock is the context's device lock, for the list (base/context.h).
 */
#include <errno.h>
#include <string.h>

#include <ugpu/fabric.h>

#include "base/context.h"
#include "base/log.h"
#include "src/device.h"

#define dev_of_ctx(link) list_entry(link, struct ugpu_device, ctx_link)

int device_link(struct ugpu_device *a, struct ugpu_device *b)
{
	uint32_t bit;

	if (a == b || a->ctx != b->ctx || device_is_removed(a) || device_is_removed(b))
		return UGPU_LINK_NONE;
	if (!(a->caps & UGPU_DEVICE_CAP_FABRIC) || !(b->caps & UGPU_DEVICE_CAP_FABRIC) ||
	    !a->fabric_uid || a->fabric_uid != b->fabric_uid || b->fabric_id >= 32 ||
	    a->fabric_id >= 32)
		return UGPU_LINK_NONE;
	bit = 1u << b->fabric_id;
	if (!(a->fabric_peers & bit) || !(b->fabric_peers & (1u << a->fabric_id)))
		return UGPU_LINK_NONE;
	return (a->fabric_fast & bit) && (b->fabric_fast & (1u << a->fabric_id)) ? UGPU_LINK_FAST
										   : UGPU_LINK_SLOW;
}

/* ---- the "fabric" step: the context's list of open devices ---------------- */

static int fabric_up(struct ugpu_device *dev, const char *uri)
{
	struct ugpu_context *ctx = dev->ctx;

	(void)uri;
	pthread_mutex_lock(&ctx->dev_lock);
	list_add_tail(&ctx->devices, &dev->ctx_link);
	pthread_mutex_unlock(&ctx->dev_lock);
	return 0;
}

static void fabric_down(struct ugpu_device *dev)
{
	struct ugpu_context *ctx = dev->ctx;

	pthread_mutex_lock(&ctx->dev_lock);
	if (list_linked(&dev->ctx_link))
		list_del(&dev->ctx_link);
	pthread_mutex_unlock(&ctx->dev_lock);
}

/* Context lifetime: a removed device stays listed (with no links) until it
 * is closed; the last step up, so the first down at close. */
static struct device_component fabric_component = {
	.name = "fabric",
	.order = DEVICE_STEP_FABRIC,
	.life = DEVICE_LIFE_CONTEXT,
	.up = fabric_up,
	.down = fabric_down,
};
DEVICE_COMPONENT(fabric_component)

unsigned int device_peers_get(struct ugpu_device *dev, struct ugpu_device **out, unsigned int max)
{
	struct ugpu_context *ctx = dev->ctx;
	unsigned int n = 0;
	int want;

	pthread_mutex_lock(&ctx->dev_lock);
	for (want = UGPU_LINK_FAST; want > UGPU_LINK_NONE; want--) {
		list_for_each(l, &ctx->devices) {
			struct ugpu_device *p = dev_of_ctx(l);

			if (n < max && device_link(dev, p) == want) {
				device_get(p); /* listed: it holds its open reference */
				out[n++] = p;
			}
		}
	}
	pthread_mutex_unlock(&ctx->dev_lock);
	return n;
}

unsigned int device_others_get(struct ugpu_device *dev, struct ugpu_device **out, unsigned int max)
{
	struct ugpu_context *ctx = dev->ctx;
	unsigned int n = 0;

	pthread_mutex_lock(&ctx->dev_lock);
	list_for_each(l, &ctx->devices) {
		struct ugpu_device *p = dev_of_ctx(l);

		if (p != dev && n < max) {
			device_get(p);
			out[n++] = p;
		}
	}
	pthread_mutex_unlock(&ctx->dev_lock);
	return n;
}

/*
 * Owner groups: the connected parts of the fast-link graph over the listed
 * devices; a group is named by the smallest context index in it. Under the
 * device lock. At most UGPU_MAX_PEERS + 1 devices take part; a device past
 * them (a context with more devices) is a group of its own.
 */
#define GROUP_MAX (UGPU_MAX_PEERS + 1)

static void owner_groups(struct ugpu_context *ctx, struct ugpu_device **v, uint32_t *group,
			     unsigned int *n)
{
	unsigned int i, j, k = 0;
	bool changed = true;

	list_for_each(l, &ctx->devices) {
		if (k == GROUP_MAX)
			break;
		v[k] = dev_of_ctx(l);
		group[k] = v[k]->ctx_index;
		k++;
	}
	/* Label propagation: at most k rounds for k devices. */
	while (changed) {
		changed = false;
		for (i = 0; i < k; i++)
			for (j = 0; j < k; j++)
				if (group[j] < group[i] && device_link(v[i], v[j]) == UGPU_LINK_FAST) {
					group[i] = group[j];
					changed = true;
				}
	}
	*n = k;
}

bool device_same_owner(struct ugpu_device *a, struct ugpu_device *b)
{
	struct ugpu_device *v[GROUP_MAX];
	uint32_t group[GROUP_MAX], ga = 0, gb = 0;
	unsigned int n, i;

	if (a == b || a->ctx != b->ctx || device_is_removed(a) || device_is_removed(b))
		return false;
	pthread_mutex_lock(&a->ctx->dev_lock);
	owner_groups(a->ctx, v, group, &n);
	pthread_mutex_unlock(&a->ctx->dev_lock);
	for (i = 0; i < n; i++) {
		if (v[i] == a)
			ga = group[i];
		if (v[i] == b)
			gb = group[i];
	}
	return ga && ga == gb;
}

UGPU_API int ugpu_device_link(struct ugpu_device *a, struct ugpu_device *b, enum ugpu_link *out)
{
	if (!a || !b || !out || a == b)
		return -EINVAL;
	if (a->ctx != b->ctx) {
		log_err(a->ctx, "ugpu_device_link: %s and %s belong to different contexts", a->name,
			b->name);
		return -EXDEV;
	}
	*out = (enum ugpu_link)device_link(a, b);
	return 0;
}

UGPU_API int ugpu_device_peers(struct ugpu_device *dev, struct ugpu_device_peers *out)
{
	struct ugpu_device_peers r;
	struct ugpu_device *v[GROUP_MAX];
	uint32_t group[GROUP_MAX], mine;
	struct ugpu_context *ctx;
	unsigned int n, i;
	size_t len;

	if (!dev || !out || out->size < sizeof(out->size))
		return -EINVAL;
	memset(&r, 0, sizeof(r));
	r.size = out->size;
	ctx = dev->ctx;
	pthread_mutex_lock(&ctx->dev_lock);
	owner_groups(ctx, v, group, &n);
	mine = dev->ctx_index;
	for (i = 0; i < n; i++)
		if (v[i] == dev && !device_is_removed(dev))
			mine = group[i];
	list_for_each(l, &ctx->devices) {
		struct ugpu_device *p = dev_of_ctx(l);
		struct ugpu_peer *e;

		if (p == dev)
			continue;
		r.total++;
		if (r.count == UGPU_MAX_PEERS)
			continue;
		e = &r.peers[r.count++];
		e->dev = p;
		e->link = (enum ugpu_link)device_link(dev, p);
		e->fabric_id = p->fabric_id;
		for (i = 0; i < n; i++)
			if (v[i] == p)
				e->same_owner = !device_is_removed(dev) && !device_is_removed(p) &&
						group[i] == mine;
	}
	pthread_mutex_unlock(&ctx->dev_lock);
	r.owner = mine;
	len = out->size < sizeof(r) ? out->size : sizeof(r);
	memcpy(out, &r, len);
	return 0;
}
