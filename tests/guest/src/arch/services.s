/* services.s: what ring 3 asks of ring 0. Ring 3 executes int3 with %rax = service number
 * and arguments in %rdi, %rsi; the result comes back in %rax. Services clobber only the
 * registers the Rust wrappers declare (rax rcx rdx rsi rdi r8-r11) and return with iretq. */

    .section .text, "ax"
/* int3: [rip cs rflags rsp ss] on IST1, IF=0. */
service_entry:
    testb $3, 8(%rsp)
    jz breakpoint_in_ring0
    cmpq ${SVC_COUNT}, %rax
    jae service_unknown
    jmp *service_table(,%rax,8)
service_unknown:
    movq $-1, %rax
    iretq
breakpoint_in_ring0:
    pushq $0
    pushq $3
    jmp exception_entry

/* IO_BATCH(%rdi = ops, %rsi = count): run a list of port/MMIO operations (layout in io.rs),
 * storing read results back into the list. Returns 0, or -1 at the first unknown kind. */
svc_io_batch:
    movq %rdi, %r10
    movq %rsi, %r11
    testq %r11, %r11
    jz io_batch_done
io_next:
    movzbl (%r10), %eax
    cmpl ${IO_KIND_COUNT}, %eax
    jae service_unknown
    jmp *io_table(,%rax,8)
io_op_done:
    addq ${IO_OP_SIZE}, %r10
    decq %r11
    jnz io_next
io_batch_done:
    xorl %eax, %eax
    iretq

io_out8:
    movl 8(%r10), %edx
    movl 16(%r10), %eax
    outb %al, %dx
    jmp io_op_done
io_out16:
    movl 8(%r10), %edx
    movl 16(%r10), %eax
    outw %ax, %dx
    jmp io_op_done
io_out32:
    movl 8(%r10), %edx
    movl 16(%r10), %eax
    outl %eax, %dx
    jmp io_op_done
io_in8:
    movl 8(%r10), %edx
    xorl %eax, %eax
    inb %dx, %al
    movq %rax, 16(%r10)
    jmp io_op_done
io_in16:
    movl 8(%r10), %edx
    xorl %eax, %eax
    inw %dx, %ax
    movq %rax, 16(%r10)
    jmp io_op_done
io_in32:
    movl 8(%r10), %edx
    inl %dx, %eax
    movq %rax, 16(%r10)
    jmp io_op_done
io_mmio_write8:
    movq 8(%r10), %rdx
    movq 16(%r10), %rax
    movb %al, (%rdx)
    jmp io_op_done
io_mmio_write16:
    movq 8(%r10), %rdx
    movq 16(%r10), %rax
    movw %ax, (%rdx)
    jmp io_op_done
io_mmio_write32:
    movq 8(%r10), %rdx
    movq 16(%r10), %rax
    movl %eax, (%rdx)
    jmp io_op_done
io_mmio_write64:
    movq 8(%r10), %rdx
    movq 16(%r10), %rax
    movq %rax, (%rdx)
    jmp io_op_done
io_mmio_read8:
    movq 8(%r10), %rdx
    movzbl (%rdx), %eax
    movq %rax, 16(%r10)
    jmp io_op_done
io_mmio_read16:
    movq 8(%r10), %rdx
    movzwl (%rdx), %eax
    movq %rax, 16(%r10)
    jmp io_op_done
io_mmio_read32:
    movq 8(%r10), %rdx
    movl (%rdx), %eax
    movq %rax, 16(%r10)
    jmp io_op_done
io_mmio_read64:
    movq 8(%r10), %rdx
    movq (%rdx), %rax
    movq %rax, 16(%r10)
    jmp io_op_done
/* OUTS8: port = addr, bytes at value, count = len: one rep outsb. */
io_outs8:
    movl 8(%r10), %edx
    movq 16(%r10), %rsi
    movq 24(%r10), %rcx
    rep outsb
    jmp io_op_done
/* DRAIN8: while (inb(port2) & mask) and fewer than len bytes: buf[n++] = inb(addr);
 * buf = value; the count read is stored in len. (An 8250 receiver: LSR.DR then RBR.) */
io_drain8:
    movq 16(%r10), %rdi
    xorl %r8d, %r8d
    movq 24(%r10), %r9
    movb 4(%r10), %cl
3:  cmpq %r9, %r8
    jae 4f
    movzwl 2(%r10), %edx
    inb %dx, %al
    testb %cl, %al
    jz 4f
    movl 8(%r10), %edx
    inb %dx, %al
    movb %al, (%rdi,%r8)
    incq %r8
    jmp 3b
4:  movq %r8, 24(%r10)
    jmp io_op_done

/* WAIT(%rdi = counter, %rsi = seen): sleep (sti; hlt) until *counter != seen. Interrupt
 * handlers bump the counters, so a wake-up that races with the caller's check is not lost. */
svc_wait:
1:  cmpq %rsi, (%rdi)
    jne 2f
    sti
    hlt
    cli
    jmp 1b
2:  xorl %eax, %eax
    iretq

svc_halt:
    jmp halt_forever

/* Load an empty IDT and fault: the fault cannot be delivered, so the CPU triple-faults. */
svc_triple_fault:
    lidt null_idt_ptr(%rip)
    ud2

/* An SSE instruction kvm-pvm's ring-0 emulator does not know: the VMM must see a crash.
 * On hardware virtualisation it simply runs, and the service returns 0. */
svc_bad_instruction:
    pxor %xmm0, %xmm0
    xorl %eax, %eax
    iretq

    .section .rodata, "a"
    .p2align 3
/* Indexed by the service numbers of arch/abi.rs. */
service_table:
    .quad svc_io_batch
    .quad svc_wait
    .quad svc_halt
    .quad svc_triple_fault
    .quad svc_bad_instruction
service_table_end:
    .if service_table_end - service_table != 8 * {SVC_COUNT}
    .error "service_table does not match SVC_COUNT"
    .endif

/* Indexed by the IoKind values of io.rs. */
io_table:
    .quad service_unknown           /* 0: never a valid kind */
    .quad io_out8, io_out16, io_out32
    .quad io_in8, io_in16, io_in32
    .quad io_mmio_write8, io_mmio_write16, io_mmio_write32, io_mmio_write64
    .quad io_mmio_read8, io_mmio_read16, io_mmio_read32, io_mmio_read64
    .quad io_outs8
    .quad io_drain8
io_table_end:
    .if io_table_end - io_table != 8 * {IO_KIND_COUNT}
    .error "io_table does not match IO_KIND_COUNT"
    .endif
