/* SPDX-License-Identifier: MIT */
/*
 * GPU VMs, queues and kernels of a device served by ugpud (see vm_remote.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "mm/bo.h"
#include "mm/vm_remote.h"
#include "src/ugpud_proto.h"

int vm_remote_create(struct ugpu_device *dev, const struct ugpu_vm_opts *opts,
		     struct ugpu_vm **out)
{
	struct ugpud_vm_create_req req = { 0 };
	struct ugpud_handle_rep rep;
	struct ugpu_vm_opts o = { .size = sizeof(o) };
	struct ugpu_vm *vm;
	int ret;

	if (opts) {
		if (opts->size < offsetof(struct ugpu_vm_opts, flags) + sizeof(opts->flags))
			return -EINVAL;
		memcpy(&o, opts, opts->size < sizeof(o) ? opts->size : sizeof(o));
		if (opts->size < offsetof(struct ugpu_vm_opts, name) + sizeof(o.name))
			o.name = NULL;
	}
	req.flags = o.flags;
	snprintf(req.name, sizeof(req.name), "%s", o.name ? o.name : "vm");
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return -ENOMEM;
	ret = remote_get(dev, UGPUD_VM_CREATE, &req, sizeof(req), &rep, sizeof(rep));
	if (ret) {
		free(vm);
		return ret;
	}
	vm->dev = dev;
	vm->flags = o.flags;
	vm->remote_handle = rep.handle;
	snprintf(vm->name, sizeof(vm->name), "%s", req.name);
	device_get(dev); /* the handle keeps the device object, as a BO's does */
	*out = vm;
	return 0;
}

static int obj_call(struct ugpu_device *dev, uint16_t op, uint32_t handle)
{
	struct ugpud_obj_req req = { .handle = handle };

	return remote_call(dev, op, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
}

int vm_remote_destroy(struct ugpu_vm *vm)
{
	struct ugpu_device *dev = vm->dev;
	int ret = obj_call(dev, UGPUD_VM_DESTROY, vm->remote_handle);

	/* -EBUSY: it has queues, the VM stays; -ENODEV: the daemon let go
	 * of it already (closed or gone) */
	if (ret && ret != -ENODEV)
		return ret;
	free(vm);
	device_put(dev);
	return 0;
}

int vm_remote_bind(struct ugpu_vm *vm, struct ugpu_bo *bo, uint64_t bo_offset, uint64_t va,
		   uint64_t bytes, uint32_t flags)
{
	struct ugpud_vm_bind_req req = {
		.vm = vm->remote_handle,
		.bo = bo->remote_handle,
		.bo_offset = bo_offset,
		.va = va,
		.bytes = bytes,
		.flags = flags,
	};

	if (bo->dev != vm->dev)
		return -EINVAL; /* another connection's BO: its handle means nothing here */
	return remote_call(vm->dev, UGPUD_VM_BIND, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
}

int vm_remote_unbind(struct ugpu_vm *vm, uint64_t va, uint64_t bytes)
{
	struct ugpud_vm_bind_req req = { .vm = vm->remote_handle, .va = va, .bytes = bytes };

	return remote_call(vm->dev, UGPUD_VM_UNBIND, &req, sizeof(req), NULL, 0, NULL, 0, NULL);
}

int vm_remote_query(struct ugpu_vm *vm, struct ugpu_vm_info *info)
{
	struct ugpud_obj_req req = { .handle = vm->remote_handle };
	struct ugpu_vm_info i = { 0 };
	struct ugpud_vm_info w;
	int ret = remote_get(vm->dev, UGPUD_VM_QUERY, &req, sizeof(req), &w, sizeof(w));

	if (ret)
		return ret;
	i.size = info->size;
	i.flags = w.flags;
	i.binds = w.binds;
	i.bound_bytes = w.bound_bytes;
	i.page_tables = w.page_tables;
	i.page_table_bytes = w.page_table_bytes;
	i.pt_gen = w.pt_gen;
	i.queues = w.queues;
	i.dead = w.dead;
	remote_fill(info, info->size, &i, sizeof(i));
	return 0;
}

int vm_remote_queue_create(struct ugpu_vm *vm, const struct ugpu_queue_opts *opts,
			   struct ugpu_queue **out)
{
	struct ugpud_queue_create_req req = { .vm = vm->remote_handle };
	struct ugpud_handle_rep rep;
	const char *name = NULL;
	struct ugpu_queue *q;
	int ret;

	if (opts && opts->size >= offsetof(struct ugpu_queue_opts, name) + sizeof(opts->name))
		name = opts->name;
	snprintf(req.name, sizeof(req.name), "%s", name ? name : "queue");
	ret = remote_get(vm->dev, UGPUD_QUEUE_CREATE, &req, sizeof(req), &rep, sizeof(rep));
	if (ret)
		return ret;
	q = queue_remote_new(vm, rep.handle);
	if (!q) {
		(void)obj_call(vm->dev, UGPUD_QUEUE_DESTROY, rep.handle);
		return -ENOMEM;
	}
	*out = q;
	return 0;
}

int vm_remote_queue_destroy(struct ugpu_queue *q)
{
	int ret = obj_call(queue_vm(q)->dev, UGPUD_QUEUE_DESTROY, queue_remote_handle(q));

	if (ret && ret != -ENODEV)
		return ret;
	queue_remote_free(q);
	return 0;
}

int vm_remote_submit(struct ugpu_queue *q, const struct ugpu_kernel *k, uint64_t *fence)
{
	struct ugpud_submit_req req = {
		.queue = queue_remote_handle(q),
		.op = (uint32_t)k->op,
		.va = k->va,
		.bytes = k->bytes,
		.value = k->value,
	};
	struct ugpud_fence_rep rep;
	int ret;

	if (k->size < offsetof(struct ugpu_kernel, value) + sizeof(k->value))
		return -EINVAL;
	ret = remote_get(queue_vm(q)->dev, UGPUD_SUBMIT, &req, sizeof(req), &rep, sizeof(rep));
	if (!ret)
		*fence = rep.fence;
	return ret;
}

int vm_remote_fence_wait(struct ugpu_queue *q, uint64_t fence, int timeout_ms,
			 struct ugpu_kernel_result *res)
{
	struct ugpud_fence_req req = { .queue = queue_remote_handle(q), .fence = fence };
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	struct ugpud_kernel_result w;
	int ret;

	/* The daemon waits (without blocking anyone) at most a slice per
	 * request: ask again until our own deadline. */
	for (;;) {
		uint64_t now = now_ns();

		req.timeout_ms = now >= deadline ? 0
						 : (uint32_t)((deadline - now + 999999) / 1000000);
		ret = remote_get(queue_vm(q)->dev, UGPUD_FENCE_WAIT, &req, sizeof(req), &w,
				 sizeof(w));
		if (ret != -EAGAIN)
			break;
		if (!timeout_ms)
			return -EAGAIN;
		if (now_ns() >= deadline)
			return -ETIMEDOUT;
	}
	if (ret)
		return ret;
	if (res) {
		struct ugpu_kernel_result r = { 0 };

		r.size = res->size;
		r.status = w.status;
		r.sum = w.sum;
		r.fault_va = w.fault_va;
		r.fault_access = (enum ugpu_access)w.fault_access;
		r.run_ns = w.run_ns;
		remote_fill(res, res->size, &r, sizeof(r));
	}
	return 0;
}

int vm_remote_queue_query(struct ugpu_queue *q, struct ugpu_queue_info *info)
{
	struct ugpud_obj_req req = { .handle = queue_remote_handle(q) };
	struct ugpu_queue_info i = { 0 };
	struct ugpud_queue_info w;
	int ret = remote_get(queue_vm(q)->dev, UGPUD_QUEUE_QUERY, &req, sizeof(req), &w, sizeof(w));

	if (ret)
		return ret;
	i.size = info->size;
	i.submitted = w.submitted;
	i.completed = w.completed;
	i.waiting = w.waiting;
	i.running = w.running;
	remote_fill(info, info->size, &i, sizeof(i));
	return 0;
}
