/* ap.s: application processor start-up. Ring 3 copies the real-mode trampoline to a free
 * page below 1 MiB and sends INIT/SIPI/SIPI; each AP switches straight from real mode to long
 * mode on the BSP's page tables, records its LAPIC id, wakes the BSP with an IPI and parks. */

    .section .text.ap_trampoline, "ax"
    .code16
    .globl ap_trampoline_start
ap_trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl ap_gdt_ptr - ap_trampoline_start
    movl ${CR4_BITS}, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl ${CR0_BITS}, %eax
    movl %eax, %cr0
    ljmpl ${KERNEL_CS}, $ap_long_mode_entry
    .p2align 2
ap_gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt
    .globl ap_trampoline_end
ap_trampoline_end:

    .section .text, "ax"
    .code64
ap_long_mode_entry:
    movl ${KERNEL_DS}, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    lidt idt_ptr(%rip)
    movq lapic_base(%rip), %rdx
    movl 0x20(%rdx), %eax           /* LAPIC id register */
    shrl $24, %eax
    movb $1, ap_online_by_apic(%rax)
    movl bsp_apic_id(%rip), %eax
    shll $24, %eax
    movl %eax, 0x310(%rdx)          /* ICR high: destination */
    movl ${AP_WAKE_ICR}, %eax
    movl %eax, 0x300(%rdx)          /* ICR low: fixed IPI to the BSP */
    jmp halt_forever
