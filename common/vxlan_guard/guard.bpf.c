// SPDX-License-Identifier: GPL-2.0
/* CJB VXLAN guard: which outer packets may reach the VXLAN socket, decided in tc ingress.
 *
 * VXLAN has no authentication (RFC 7348 §7) and the kernel's VXLAN socket listens on every
 * interface and picks the device by VNI alone. The nftables rules say the same as this
 * program, but another program can flush them (`nft flush ruleset`, an nftables.service
 * reload); a tc filter is not part of the nftables ruleset, and an attached program keeps
 * itself and its maps alive even when the process that loaded it is gone. So this is
 * where the binding is enforced, and nftables is the second, visible layer.
 *
 *   guard_wan      an underlay NIC when VXLAN runs inside WireGuard: no VXLAN at all
 *                  (an Ethernet device: the IP header follows 14 bytes of Ethernet)
 *   guard_tunnel   the WireGuard interface (no link-layer header): VNI -> the one outer
 *                  source bound to it (WireGuard's allowed IPs make that source a key)
 *   guard_trusted  an underlay NIC in the plain-VXLAN ("trusted link") mode: the same
 *                  binding, on Ethernet
 * VTEPs never fragment (RFC 7348 §4.3), so a fragmented packet to the VXLAN port is
 * dropped: its VNI could sit in a later fragment where no filter sees it.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IPPROTO_UDP 17
/* IPv6 extension headers that may stand before UDP (RFC 8200 §4.1). */
#define NH_HOP 0
#define NH_ROUTING 43
#define NH_FRAGMENT 44
#define NH_DEST 60
#define MAX_EXT 4

struct guard_cfg {
	__u32 port;    /* the VXLAN UDP port, host order */
	__u32 enabled; /* 0: pass everything (only before the loader's first write) */
};

/* The outer source bound to a VNI; IPv4 as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2). */
struct guard_peer {
	__u8 addr[16];
};

/* Counter slots; cjb.common.vxlan_guard.guard names them in the same order. */
enum {
	G_BOUND,
	G_UNKNOWN_VNI,
	G_SPOOFED,
	G_FROM_UNDERLAY,
	G_FRAGMENT,
	G_COUNT,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_cfg);
} guard_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct guard_peer);
} guard_bind SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, G_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} guard_stats SEC(".maps");

/* Per bound VNI: packets carrying it from another source (the loader adds an entry per
 * binding, so a tenant's status shows who forged its VNI). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} guard_spoofed SEC(".maps");

static __always_inline int count(__u32 slot, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&guard_stats, &slot);
	if (c)
		*c += 1;
	return verdict;
}

enum { ROLE_WAN, ROLE_BINDING };

static __always_inline int guard(struct __sk_buff *skb, __u32 l3, int role)
{
	__u32 zero = 0;
	struct guard_cfg *cfg = bpf_map_lookup_elem(&guard_cfg, &zero);
	if (!cfg || !cfg->enabled)
		return TC_ACT_OK;
	struct guard_peer src = {};
	__u8 proto;
	__u32 l4;
	int fragment = 0;

	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		__u8 ip6[40];
		if (bpf_skb_load_bytes(skb, l3, ip6, sizeof(ip6)))
			return TC_ACT_OK; /* the stack drops a truncated header itself */
		proto = ip6[6];
		__builtin_memcpy(src.addr, &ip6[8], 16);
		l4 = l3 + 40;
#pragma unroll
		for (int i = 0; i < MAX_EXT; i++) {
			__u8 ext[4];
			if (proto != NH_HOP && proto != NH_ROUTING && proto != NH_DEST &&
			    proto != NH_FRAGMENT)
				break;
			if (bpf_skb_load_bytes(skb, l4, ext, sizeof(ext)))
				return TC_ACT_OK;
			if (proto == NH_FRAGMENT) {
				/* A later fragment carries no UDP header; it cannot be
				 * reassembled without the first, which is checked. */
				if ((((__u16)ext[2] << 8) | ext[3]) & 0xFFF8)
					return TC_ACT_OK;
				fragment = 1;
				proto = ext[0];
				l4 += 8;
			} else {
				proto = ext[0];
				l4 += ((__u32)ext[1] + 1) * 8;
			}
		}
		if (proto == NH_HOP || proto == NH_ROUTING || proto == NH_DEST ||
		    proto == NH_FRAGMENT)
			/* More headers than a VTEP ever sends: the UDP port is out of
			 * sight, so this is treated like a fragment on a guarded path. */
			return role == ROLE_WAN ? count(G_FROM_UNDERLAY, TC_ACT_SHOT)
						: count(G_FRAGMENT, TC_ACT_SHOT);
	} else if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u8 ip4[20];
		if (bpf_skb_load_bytes(skb, l3, ip4, sizeof(ip4)))
			return TC_ACT_OK;
		__u16 frag = ((__u16)ip4[6] << 8) | ip4[7];
		if (frag & 0x1FFF)
			return TC_ACT_OK; /* a later fragment (see above) */
		fragment = (frag & 0x2000) != 0; /* MF */
		proto = ip4[9];
		src.addr[10] = 0xFF;
		src.addr[11] = 0xFF;
		__builtin_memcpy(&src.addr[12], &ip4[12], 4);
		l4 = l3 + ((__u32)(ip4[0] & 0x0F)) * 4;
	} else {
		return TC_ACT_OK;
	}
	if (proto != IPPROTO_UDP)
		return TC_ACT_OK;
	__u8 udp[8];
	if (bpf_skb_load_bytes(skb, l4, udp, sizeof(udp)))
		return TC_ACT_OK;
	if ((((__u32)udp[2] << 8) | udp[3]) != cfg->port)
		return TC_ACT_OK;
	if (role == ROLE_WAN)
		return count(G_FROM_UNDERLAY, TC_ACT_SHOT);
	if (fragment)
		return count(G_FRAGMENT, TC_ACT_SHOT);
	__u8 vx[8]; /* flags(8) reserved(24) VNI(24) reserved(8), RFC 7348 §5 */
	if (bpf_skb_load_bytes(skb, l4 + 8, vx, sizeof(vx)))
		return count(G_UNKNOWN_VNI, TC_ACT_SHOT);
	__u32 vni = ((__u32)vx[4] << 16) | ((__u32)vx[5] << 8) | vx[6];
	struct guard_peer *bound = bpf_map_lookup_elem(&guard_bind, &vni);
	if (!bound)
		return count(G_UNKNOWN_VNI, TC_ACT_SHOT);
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (bound->addr[i] != src.addr[i]) {
			__u64 *c = bpf_map_lookup_elem(&guard_spoofed, &vni);
			if (c)
				*c += 1;
			return count(G_SPOOFED, TC_ACT_SHOT);
		}
	return count(G_BOUND, TC_ACT_OK);
}

SEC("tc")
int guard_wan(struct __sk_buff *skb)
{
	return guard(skb, ETH_HLEN, ROLE_WAN);
}

SEC("tc")
int guard_tunnel(struct __sk_buff *skb)
{
	return guard(skb, 0, ROLE_BINDING);
}

SEC("tc")
int guard_trusted(struct __sk_buff *skb)
{
	return guard(skb, ETH_HLEN, ROLE_BINDING);
}

char LICENSE[] SEC("license") = "GPL";
